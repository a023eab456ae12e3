//go:build linux

package snakepit

import (
	"context"

	"github.com/snakepit/snakepit/spawn"
)

// startPreExecForTest starts c with the pre-exec placement that is normally
// only used when clone3 refuses CLONE_INTO_CGROUP.
func (r *Run) startPreExecForTest(ctx context.Context, c Command) (*Worker, error) {
	spawn.ForcePreExecForTest(true)
	defer spawn.ForcePreExecForTest(false)
	return r.Start(ctx, c)
}
