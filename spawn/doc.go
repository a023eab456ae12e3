// Package spawn starts worker processes straight into a run cgroup.
//
// Every child is forked from a dedicated, locked OS thread of a Spawner, and
// that thread lives as long as the children: Linux delivers Pdeathsig when
// the creating thread exits, not the process (golang/go#27505), so forking
// from whatever thread a goroutine happens to run on would let an unrelated
// thread exit kill a worker. A Spawner has one such thread, and more (up to
// MaxThreads) while all are busy: a start waits for its child's exec, and a
// child stopped before exec would otherwise hold up every other start.
// Threads are kept until Close, idle or not (see loop). Children are placed in their cgroup by clone3
// CLONE_INTO_CGROUP, so they are inside it from their first instruction; when
// the kernel refuses that (ENOSYS/EINVAL: too old; EBUSY: the target's parent
// has domain controllers enabled) the child is started through /bin/sh, which
// writes itself into cgroup.procs before exec'ing the command. The racy
// "write the PID after Start" is never used.
package spawn

import "errors"

// ErrClosed is returned by a Spawner after Close.
var ErrClosed = errors.New("spawner closed")

// ErrUnsupported is returned on platforms other than Linux.
var ErrUnsupported = errors.New("spawn: only supported on Linux")

// ErrBroken is returned by a Spawner whose thread could not be restored
// after an Around hook (for example setns back failed). The thread is kept
// parked, never reused; spawn.Default replaces such a Spawner.
var ErrBroken = errors.New("spawner thread unusable: restoring it after a hook failed")

// Placement names how a child was put into its cgroup.
type Placement string

const (
	// PlaceClone3: clone3(CLONE_INTO_CGROUP), atomic.
	PlaceClone3 Placement = "clone3"
	// PlacePreExec: the child wrote itself into cgroup.procs before exec.
	PlacePreExec Placement = "pre-exec"
	// PlaceNone: no cgroup was requested.
	PlaceNone Placement = "none"
)
