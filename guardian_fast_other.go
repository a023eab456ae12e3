//go:build linux && !amd64

package snakepit

import (
	"context"
	"errors"
	"fmt"

	"github.com/snakepit/snakepit/reaper"
)

// FastGuardianName is the command name of the in-process guardian.
const FastGuardianName = "snakepit-guard"

// ErrNoFastGuardian means the in-process guardian cannot be used here; on
// this architecture it is not implemented (its child is amd64 assembly).
var ErrNoFastGuardian = errors.New("in-process guardian unavailable")

// FastGuardianAvailable says why StartFastGuardian cannot be used here.
func FastGuardianAvailable() error {
	return fmt.Errorf("%w: not implemented on this architecture (its child is amd64 assembly)", ErrNoFastGuardian)
}

// StartFastGuardian returns ErrNoFastGuardian on this architecture; use
// StartGuardian.
func StartFastGuardian(ctx context.Context, o GuardianOptions, cgroupPath string) (reaper.Identity, error) {
	return reaper.Identity{}, ErrNoFastGuardian
}
