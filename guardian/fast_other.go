//go:build linux && !amd64

package guardian

import (
	"context"
	"errors"
	"fmt"

	"github.com/snakepit/snakepit/reaper"
)

// FastName is the command name of the in-process guardian.
const FastName = "snakepit-guard"

// ErrNoFast means the in-process guardian cannot be used here; on
// this architecture it is not implemented (its child is amd64 assembly).
var ErrNoFast = errors.New("in-process guardian unavailable")

// FastAvailable says why StartFast cannot be used here.
func FastAvailable() error {
	return fmt.Errorf("%w: not implemented on this architecture (its child is amd64 assembly)", ErrNoFast)
}

// StartFast returns ErrNoFast on this architecture; use
// Start.
func StartFast(ctx context.Context, o Options, cgroupPath string) (reaper.Identity, error) {
	return reaper.Identity{}, ErrNoFast
}
