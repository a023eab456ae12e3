// Package systemd is snakepit's integration with systemd as PID 1: whether
// systemd runs the host, which cgroup we are in and whether it was delegated
// to us (Delegate=yes), asking systemd over D-Bus for a transient scope with
// Delegate=yes when it was not, laying out a delegated subtree (the
// supervisor moves itself into a leaf "supervisor/" so that its
// snakepit-<runid> siblings obey the no-internal-processes rule), sd_notify
// (READY=1, STATUS=, STOPPING=1, WATCHDOG=1) and the unit file of the daemon.
//
// containerd/cgroups' cgroup2.NewSystemd is not used: it never requests
// Delegate and ignores its slice argument, so systemd would remain the
// writer of the cgroup we create runs in.
package systemd

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrNotRunning means systemd is not PID 1 (no /run/systemd/system).
	ErrNotRunning = errors.New("systemd is not running as PID 1")
	// ErrNotDelegated means our cgroup was not delegated to us.
	ErrNotDelegated = errors.New("cgroup is not delegated to us")
	// ErrJobFailed means a systemd job finished with a result other than
	// "done".
	ErrJobFailed = errors.New("systemd job failed")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("systemd: only supported on Linux")
)

// JobError is a systemd job that did not finish with "done".
type JobError struct {
	// Unit is the unit the job was for.
	Unit string
	// Result is systemd's job result: "canceled", "timeout", "failed",
	// "dependency", "skipped".
	Result string
}

func (e *JobError) Error() string {
	return fmt.Sprintf("systemd job for %s: result %q", e.Unit, e.Result)
}

// Unwrap makes errors.Is(err, ErrJobFailed) true.
func (e *JobError) Unwrap() error { return ErrJobFailed }

// DelegationError says why a cgroup does not count as delegated to us.
type DelegationError struct {
	// Path is the cgroup directory.
	Path string
	// Reason is what is missing.
	Reason string
}

func (e *DelegationError) Error() string {
	return fmt.Sprintf("cgroup %s is not delegated to us: %s", e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, ErrNotDelegated) true.
func (e *DelegationError) Unwrap() error { return ErrNotDelegated }

// Delegation describes how a cgroup relates to us.
type Delegation struct {
	// Path is the absolute path of the cgroup directory.
	Path string
	// Xattr is true when systemd marked the cgroup delegated
	// (trusted.delegate=1 or user.delegate=1, systemd >= 251).
	Xattr bool
	// Owner is the UID owning the cgroup directory.
	Owner int
	// Writable is true when we may create sub-cgroups and write its
	// cgroup.procs and cgroup.subtree_control.
	Writable bool
}

// Delegated reports whether the cgroup counts as ours to manage: systemd
// marked it delegated, it is writable by us and owned by our effective UID.
func (d Delegation) Delegated(euid int) bool {
	return d.Xattr && d.Writable && d.Owner == euid
}

// SupervisorLeaf is the name of the leaf cgroup a supervisor moves itself
// into inside its delegated subtree.
const SupervisorLeaf = "supervisor"
