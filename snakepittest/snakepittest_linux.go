//go:build linux

package snakepittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// TB is the part of testing.TB the helper uses; *testing.T, *testing.B and
// *testing.F satisfy it.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Logf(format string, args ...any)
}

// WaitDelay is the exec.Cmd.WaitDelay of commands from Command: how long
// Wait and Output keep reading a pipe after the command exited while a
// leaked grandchild still holds it.
const WaitDelay = 5 * time.Second

// Leak is a process found alive in the run when the test ended.
type Leak struct {
	PID     int
	Cmdline string
}

func (l Leak) String() string { return fmt.Sprintf("pid %d: %s", l.PID, l.Cmdline) }

// Run is a test's own snakepit run.
type Run struct {
	t   TB
	run *snakepit.Run
	dir *os.File

	mu     sync.Mutex
	closed bool
	leaks  []Leak
}

// New creates the test's run and registers its teardown and leak check
// with t.Cleanup. Without root or cgroup2 the test is skipped (failed
// under CI=true).
func New(t TB) *Run {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		if testenv.InCI() {
			t.Fatalf("snakepittest: prerequisite missing in CI: "+format, args...)
		}
		t.Skipf("snakepittest: skipping: "+format, args...)
	}
	if os.Geteuid() != 0 {
		missing("needs root (euid is %d)", os.Geteuid())
		return nil // not reached with a real testing.TB
	}
	if _, err := cgroup.FindMount(); err != nil {
		missing("needs cgroup2: %v", err)
		return nil
	}
	ctx := context.Background()
	// Leaks are read from the cgroup: no POSIX fallback. The run is
	// registered with the guardian service, so that a test binary killed by
	// SIGKILL (or a timeout panic, which runs no cleanups) leaves nothing.
	opts := snakepit.Options{Mode: snakepit.ModeCgroup}
	run, err := snakepit.Create(ctx, opts)
	if errors.Is(err, snakepit.ErrNoGuardian) {
		t.Logf("snakepittest: the run is not guarded (a killed test leaves it to 'snakepit gc'): %v", err)
		opts.NoGuardian = true
		run, err = snakepit.Create(ctx, opts)
	}
	if err != nil {
		t.Fatalf("snakepittest: create run: %v", err)
		return nil
	}
	dir, err := run.Cgroup().OpenDir()
	if err != nil {
		_, _ = run.Teardown(ctx, 0)
		t.Fatalf("snakepittest: open run cgroup: %v", err)
		return nil
	}
	r := &Run{t: t, run: run, dir: dir}
	t.Cleanup(func() {
		t.Helper()
		r.Close()
	})
	return r
}

// ID returns the run ID.
func (r *Run) ID() string { return r.run.ID() }

// Run returns the underlying run, e.g. to Start workers with Pdeathsig and
// pidfds. Workers started there are checked and torn down like the rest.
func (r *Run) Run() *snakepit.Run { return r.run }

// CgroupPath returns the run cgroup's path.
func (r *Run) CgroupPath() string { return r.run.CgroupPath() }

// Command is exec.Command for a process that starts inside the run: its
// SysProcAttr places it in the run cgroup from its first instruction, its
// environment (os.Environ() unless you replace Env; keep the marker if you
// do) carries SNAKEPIT_RUN_ID, and WaitDelay is set. Adjust SysProcAttr
// fields as you like but keep UseCgroupFD and CgroupFD.
func (r *Run) Command(name string, args ...string) *exec.Cmd {
	return r.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with exec.CommandContext.
func (r *Run) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	r.t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), runid.EnvVar+"="+r.run.ID())
	cmd.WaitDelay = WaitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(r.dir.Fd())}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.t.Fatalf("snakepittest: Command after the run was closed")
		return cmd
	}
	r.mu.Unlock()
	return cmd
}

// Procs returns the processes alive in the run now (the leaks, were the
// test to end now).
func (r *Run) Procs() []Leak {
	pids, err := r.run.Cgroup().ProcsRecursive()
	if err != nil {
		return nil
	}
	var out []Leak
	for _, pid := range pids {
		if reaper.Dying(pid) {
			// Killed an instant ago and not yet waited for: not a leak.
			continue
		}
		out = append(out, Leak{PID: pid, Cmdline: inventory.Cmdline(pid)})
	}
	return out
}

// Close checks for leaks, reports each with t.Errorf and tears the run down
// (kill, wait until empty, remove). It returns the leaks. It does not touch
// the commands the test made: one may be waited for on another goroutine
// (a Wait of ours raced it), and one never waited for is the test's zombie,
// as with os/exec. It runs automatically at cleanup; call
// it earlier to check in the middle of a test. Idempotent.
func (r *Run) Close() []Leak {
	r.t.Helper()
	r.mu.Lock()
	if r.closed {
		defer r.mu.Unlock()
		return r.leaks
	}
	r.closed = true
	r.mu.Unlock()

	leaks := r.Procs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, terr := r.run.Teardown(ctx, 0)
	r.dir.Close()
	for _, l := range leaks {
		r.t.Errorf("snakepittest: leaked process %s", l)
	}
	if len(leaks) > 0 {
		r.t.Errorf("snakepittest: %d process(es) of run %s were still alive when the test ended", len(leaks), r.run.ID())
	}
	if terr != nil {
		r.t.Errorf("snakepittest: teardown of run %s: %v", r.run.ID(), terr)
	}
	r.mu.Lock()
	r.leaks = leaks
	r.mu.Unlock()
	return leaks
}
