//go:build linux

package placement

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/systemd"
)

func TestDecideConfiguredWins(t *testing.T) {
	p, err := Decide(Request{Parent: "/sys/fs/cgroup/x/../y", NoSystemd: true, Slice: "a.slice"})
	if err != nil || p.Mode != Configured || p.Parent != "/sys/fs/cgroup/y" {
		t.Fatalf("Decide = %+v, %v", p, err)
	}
	if _, err := Decide(Request{Parent: "rel"}); err == nil {
		t.Fatal("a relative parent was accepted")
	}
}

func TestDecideWithoutSystemd(t *testing.T) {
	testenv.RequireCgroup2(t)
	want, err := cgroup.DefaultParent()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decide(Request{NoSystemd: true})
	if err != nil || p.Mode != Default || p.Parent != want || p.Reason == "" {
		t.Fatalf("NoSystemd: Decide = %+v, %v; want default %s", p, err, want)
	}
	if systemd.IsRunning() {
		t.Skip("systemd is PID 1 here: the systemd rig checks the systemd placements")
	}
	p, err = Decide(Request{})
	if err != nil || p.Mode != Default || p.Reason != "systemd is not PID 1" {
		t.Fatalf("Decide = %+v, %v", p, err)
	}
	if got, err := p.Prepare(context.Background(), runid.Generate(), Options{}); err != nil || got != want {
		t.Fatalf("Prepare = %q, %v", got, err)
	}
}

// ReleaseScope leaves a run outside a scope alone, and ends what is in a
// run's scope-shaped parent (here a plain cgroup named like one).
func TestReleaseScope(t *testing.T) {
	testenv.RequireRoot(t)
	m := testenv.RequireCgroup2(t)
	base := filepath.Join(m.Path, "sptest-placement-"+runid.Generate())
	id := runid.Generate()
	scope := filepath.Join(base, ScopeName(id))
	if err := os.MkdirAll(filepath.Join(scope, HolderLeaf), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = cgroup.At(base).Kill(ctx)
		_ = cgroup.At(base).WaitEmpty(ctx)
		_ = cgroup.At(base).Remove(ctx)
	})
	h, err := startHolder(nil)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := pidfdOf(h.pid)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := cgroup.At(filepath.Join(scope, HolderLeaf)).Move(h.pid); err != nil {
		t.Fatal(err)
	}
	// Not a run in a scope: nothing happens.
	if err := ReleaseScope(context.Background(), filepath.Join(base, cgroup.Prefix+id)); err != nil {
		t.Fatal(err)
	}
	if exited(fd) {
		t.Fatal("ReleaseScope killed outside a scope")
	}
	if err := ReleaseScope(context.Background(), filepath.Join(scope, cgroup.Prefix+id)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the holder dead", func() bool { return exited(fd) })
}
