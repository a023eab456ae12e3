// Package snakepit owns runs: a run is a set of worker processes that live in
// one cgroup (snakepit-<runid>) and are torn down together, so that nothing a
// run starts outlives it. The snakepit CLI, the daemon and test rigs are all
// thin clients of this package.
//
//	r, err := snakepit.Create(ctx, snakepit.Options{})
//	w, err := r.Start(ctx, snakepit.Command{Args: []string{"python3", "worker.py"}})
//	...
//	err = r.Teardown(ctx, 5*time.Second)
package snakepit

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Sentinel errors of the run API.
var (
	// ErrClosed means the run was already torn down.
	ErrClosed = errors.New("run already torn down")
	// ErrNoCommand means a Command had no program.
	ErrNoCommand = errors.New("command has no program")
	// ErrUnknownRun means no run cgroup with that ID exists under the known
	// parents.
	ErrUnknownRun = errors.New("no such run")
	// ErrBadParent means a cgroup parent given by the caller is relative
	// or outside every cgroup2 mount.
	ErrBadParent = errors.New("invalid cgroup parent")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("snakepit: only supported on Linux")
)

// DefaultGrace is the time between SIGTERM and cgroup.kill when a caller
// does not choose one.
const DefaultGrace = 5 * time.Second

// ExitStatus is how a worker ended.
type ExitStatus struct {
	// Code is the exit code when the worker exited normally.
	Code int
	// Signal is the signal that killed the worker, or 0.
	Signal syscall.Signal
}

// ShellCode is the status a shell would report: Code, or 128+N when killed
// by signal N.
func (s ExitStatus) ShellCode() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

func (s ExitStatus) String() string {
	if s.Signal != 0 {
		return fmt.Sprintf("killed by %v", s.Signal)
	}
	return fmt.Sprintf("exit status %d", s.Code)
}

// TeardownReport says what a teardown did.
type TeardownReport struct {
	// Terminated is how many processes got SIGTERM.
	Terminated int
	// Killed is true when the grace period ran out and the rest was killed.
	Killed bool
	// KillMechanism names how the rest was killed ("cgroup.kill", ...).
	KillMechanism string
	// Duration is the time the teardown took.
	Duration time.Duration
	// Vanished is true when the run cgroup was already gone (removed by
	// someone else while in use).
	Vanished bool
}
