package main

import (
	"fmt"
	"io/fs"
	"os"
	"testing"

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
