package systemd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
)

const leafHelperEnv = "SNAKEPIT_SYSTEMD_TEST_LEAF"

func TestMain(m *testing.M) {
	if root := os.Getenv(leafHelperEnv); root != "" {
		// Helper: we were started inside root; lay it out and report.
		l, err := MoveToLeaf(root)
		own, _ := OwnCgroup()
		out := map[string]any{"layout": l, "own": own}
		if err != nil {
			out["err"] = err.Error()
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testCgroup makes a private cgroup and removes it (and anything left in
// it) at cleanup.
func testCgroup(t *testing.T) string {
	t.Helper()
	m := testenv.RequireCgroup2(t)
	p := filepath.Join(m.Path, "sptest-systemd-"+runid.Generate())
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g, err := cgroup.Open(p)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if pids, _ := g.ProcsRecursive(); len(pids) > 0 {
			t.Errorf("processes left in %s: %v", p, pids)
			_, _ = g.Kill(ctx)
		}
		if err := g.Remove(ctx); err != nil {
			t.Errorf("remove %s: %v", p, err)
		}
	})
	return p
}

func TestInspectDelegation(t *testing.T) {
	p := testCgroup(t)
	_, err := CheckDelegated(p)
	var de *DelegationError
	if !errors.As(err, &de) || !errors.Is(err, ErrNotDelegated) || !strings.Contains(de.Reason, "xattr") {
		t.Fatalf("CheckDelegated of a plain cgroup = %v, want a DelegationError about the xattr", err)
	}
	// What systemd does for Delegate=yes.
	if err := unix.Setxattr(p, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Fatalf("setxattr: %v", err)
	}
	d, err := CheckDelegated(p)
	if err != nil {
		t.Fatalf("CheckDelegated after trusted.delegate=1: %v", err)
	}
	if !d.Xattr || !d.Writable || d.Owner != 0 || !d.Delegated(0) {
		t.Errorf("delegation = %+v", d)
	}
	if d.Delegated(1000) {
		t.Errorf("a root-owned cgroup counts as delegated to uid 1000")
	}
	if _, err := Inspect(filepath.Join(p, "nope")); !errors.Is(err, cgroup.ErrNotExist) {
		t.Errorf("Inspect of a missing cgroup: %v", err)
	}
}

// TestMoveToLeaf starts a helper inside a fresh cgroup; it moves itself
// into <cgroup>/supervisor, leaving the cgroup itself empty.
func TestMoveToLeaf(t *testing.T) {
	p := testCgroup(t)
	dir, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := testenv.HelperProcess("", leafHelperEnv+"="+p)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var res struct {
		Layout Layout
		Own    string
		Err    string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	leaf := filepath.Join(p, SupervisorLeaf)
	if res.Err != "" || res.Own != leaf || res.Layout.Supervisor != leaf || res.Layout.Moved < 1 {
		t.Errorf("helper = %+v, want it in %s", res, leaf)
	}
	if b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs")); len(strings.TrimSpace(string(b))) != 0 {
		t.Errorf("processes left in the delegated root: %q", b)
	}
}

func TestStartTransientScopeWithoutSystemd(t *testing.T) {
	if IsRunning() {
		t.Skip("systemd is PID 1 here; test/systemd-rig covers scopes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := StartTransientScope(ctx, fmt.Sprintf("sptest-%d.scope", os.Getpid()), []int{os.Getpid()}, ScopeOptions{Delegate: true}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("StartTransientScope without systemd = %v, want ErrNotRunning", err)
	}
}
