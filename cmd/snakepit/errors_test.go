package main

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/client"
)

// A permission error exits 122 whichever command met it; only the user's
// own command that cannot be executed is 126.
func TestPermissionExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("mkdir: %w", cgroup.ErrPermission), exitPermission},
		{&fs.PathError{Op: "open", Path: "/run/snakepit/runs/x.json", Err: os.ErrPermission}, exitPermission},
		{fmt.Errorf("kill run: %w", client.ErrForbidden), exitPermission},
		{startError{&fs.PathError{Op: "exec", Path: "/bin/x", Err: os.ErrPermission}}, exitCannotExec},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// Only finding and executing the command mean 126/127; the same errnos met
// while setting its start up are snakepit's own failures.
func TestStartExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("start x: %w", &exec.Error{Name: "x", Err: exec.ErrNotFound}), exitNotFound},
		{fmt.Errorf("start /bin/x: %w", &fs.PathError{Op: "fork/exec", Path: "/bin/x", Err: unix.EACCES}), exitCannotExec},
		{fmt.Errorf("start /bin/x: %w", &fs.PathError{Op: "fork/exec", Path: "/bin/x", Err: unix.ENOENT}), exitNotFound},
		{fmt.Errorf("start /bin/true: unshare(CLONE_NEWNET): %w", unix.EPERM), exitPermission},
		{fmt.Errorf("start /bin/true: open cgroup: %w", &fs.PathError{Op: "open", Path: "/sys/fs/cgroup/x", Err: unix.ENOENT}), exitFailure},
	} {
		if got := exitCode(commandStartError(c.err)); got != c.want {
			t.Errorf("exitCode(commandStartError(%v)) = %d, want %d", c.err, got, c.want)
		}
	}
}

// A command that failed on several runs exits with their shared status.
func TestSharedCode(t *testing.T) {
	perm := fmt.Errorf("kill ab12cde: %w", cgroup.ErrPermission)
	other := fmt.Errorf("kill ab12cdf: %w", unix.EIO)
	if got := sharedCode([]error{perm, perm}); got != exitPermission {
		t.Errorf("two permission errors: %d, want %d", got, exitPermission)
	}
	if got := sharedCode([]error{perm, other}); got != exitFailure {
		t.Errorf("mixed errors: %d, want %d", got, exitFailure)
	}
}
