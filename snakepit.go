// Package snakepit owns runs: a run is a set of worker processes that live in
// one cgroup (snakepit-<runid>) and are torn down together, so that nothing a
// run starts outlives it. The snakepit CLI, the daemon and test rigs are all
// thin clients of this package.
//
//	r, err := snakepit.Create(ctx, snakepit.Options{})
//	w, err := r.Start(ctx, snakepit.Command{Args: []string{"python3", "worker.py"}})
//	...
//	rep, err := r.Teardown(ctx, 5*time.Second)
//
// This package is the facade: a run is described by package spec (the one
// description every front door shares: FromSpec, CommandFromSpec), and each
// mechanism lives in the package named after it: containment and posix
// (how processes are held and torn down), record (ownership), limits, jail
// (network namespace, credentials, readiness), guardian, inventory (ps,
// kill, gc). docs/DESIGN.md has the map.
package snakepit

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/spec"
)

// Sentinel errors of the run API. Those of the mechanisms are the same
// values, so errors.Is works with either name.
var (
	// ErrClosed means the run was already torn down.
	ErrClosed = jail.ErrClosed
	// ErrNoCommand means a Command had no program.
	ErrNoCommand = spec.ErrNoCommand
	// ErrUnknownRun means no run with that ID exists under the known
	// parents.
	ErrUnknownRun = inventory.ErrUnknownRun
	// ErrBadParent means a cgroup parent given by the caller is relative
	// or outside every cgroup2 mount.
	ErrBadParent = errors.New("invalid cgroup parent")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("snakepit: only supported on Linux")

	ErrControllerUnavailable = limits.ErrControllerUnavailable
	ErrBadLimit              = spec.ErrBadLimit
	ErrBadNetns              = spec.ErrBadNetns
	ErrNoNetns               = jail.ErrNoNetns
	ErrUnknownUser           = jail.ErrUnknownUser
	ErrNotReady              = jail.ErrNotReady
	ErrExitedBeforeReady     = jail.ErrExitedBeforeReady
	// ErrExists means the run ID is in use.
	ErrExists = cgroup.ErrExists
)

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
