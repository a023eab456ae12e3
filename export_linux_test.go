//go:build linux

package snakepit

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spawn"
)

// startPreExecForTest starts c with the pre-exec placement that is normally
// only used when clone3 refuses CLONE_INTO_CGROUP.
func (r *Run) startPreExecForTest(ctx context.Context, c Command) (*Worker, error) {
	spawn.ForcePreExecForTest(true)
	defer spawn.ForcePreExecForTest(false)
	return r.Start(ctx, c)
}

// abandonForTest closes the run's spawn directory without a teardown, as a
// supervisor that dies leaves its run.
func (r *Run) abandonForTest() {
	if c, ok := r.box.(*containment.Cgroup); ok {
		c.Release()
	}
}

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithGuardian(m))
}

// privateRecords points file records at a fresh directory of the test's
// (the guardian service the test starts lives beside them).
func privateRecords(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "runs")
	t.Setenv(record.DirEnv, dir)
	return dir
}
