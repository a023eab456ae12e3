// Package reaper owns child reaping for a supervisor process: it makes the
// process a child subreaper (so orphaned grandchildren are re-parented to it
// instead of init) and runs the single wait4(-1) loop of the process. Every
// other waiter subscribes here: a second wait4(-1) caller, or exec.Cmd.Wait
// racing with this loop, would steal exit statuses ("no child processes").
// This mirrors containerd's reaper.
//
// It also owns what a supervisor without a cgroup needs to find and end
// processes: identity (PID + start time, pinned by a pidfd), the run-ID
// scan of /proc, and Family, a run's processes reconstructed from /proc
// (workers and descendants, marker, orphans, process groups) with Kill.
package reaper

import "errors"

// ErrUnsupported is returned on platforms other than Linux.
var ErrUnsupported = errors.New("reaper: only supported on Linux")

// ErrNotStarted means Start has not been called.
var ErrNotStarted = errors.New("reaper: not started")
