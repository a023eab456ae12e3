//go:build linux

package containment

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
)

type sleeper struct {
	pid  int
	done chan error // the Wait's result, once it has exited
}

// startSleep starts a sleep in its own process group, killed (group and
// all) and reaped at the test's end whatever happens.
func startSleep(t *testing.T) *sleeper {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{pid: cmd.Process.Pid, done: make(chan error, 1)}
	waited := make(chan struct{})
	go func() { s.done <- cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		_ = unix.Kill(-s.pid, unix.SIGKILL)
		<-waited
	})
	return s
}

func enter(t *testing.T, cg *cgroup.Group, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cg.Path(), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("move %d into %s: %v", pid, cg.Path(), err)
	}
}

// A process that joins a run cgroup after the teardown's kill (moved in,
// or cloned in once the kill has passed) is killed too, and the cgroup
// removed: it used to hold the wait until its deadline, and survive.
func TestTeardownKillsLateJoiner(t *testing.T) {
	testenv.RequireRoot(t)
	m := testenv.RequireCgroup2(t)
	parent := filepath.Join(m.Path, "sptest-containment-"+runid.Generate())
	cg, err := cgroup.Create(parent, cgroup.Prefix+runid.Generate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cg.Kill(ctx); err == nil {
			_ = cg.WaitEmpty(ctx)
		}
		_ = cg.Remove(ctx)
		if err := unix.Rmdir(parent); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("remove %s: %v", parent, err)
		}
	})
	worker, joiner := startSleep(t), startSleep(t)
	enter(t, cg, worker.pid)

	joined := false
	afterKill = func(g *cgroup.Group) {
		enter(t, g, joiner.pid)
		joined = true
	}
	t.Cleanup(func() { afterKill = func(*cgroup.Group) {} })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := TeardownGroup(ctx, cg, 0)
	if err != nil {
		t.Fatalf("teardown: %v (report %+v)", err, rep)
	}
	if !joined {
		t.Fatal("the hook did not run: the teardown never killed")
	}
	for name, s := range map[string]*sleeper{"worker": worker, "joiner": joiner} {
		select {
		case err := <-s.done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Errorf("%s ended with %v, want SIGKILL", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s still runs after the teardown", name)
		}
	}
	if _, err := os.Stat(cg.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after the teardown: %v", cg.Path(), err)
	}
}
