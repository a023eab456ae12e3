package snakepit

import (
	"context"
	"errors"
	"fmt"

	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/record"
)

// ErrNoGuardian means Create could not have the run guarded: no guardian
// service runs and no snakepit binary was found to start one (set
// Options.GuardianBinary or $SNAKEPIT_BIN, put snakepit on $PATH, or set
// Options.NoGuardian).
var ErrNoGuardian = errors.New("no guardian for the run")

// connectGuardian finds the guardian of a new run (guardian.Connect). nil
// when the caller turned guarding off or brings its own
// (Options.Guardian).
func connectGuardian(ctx context.Context, opts *Options, parent string) (*guardian.Guard, error) {
	if opts.NoGuardian || opts.Guardian != nil {
		return nil, nil
	}
	g, err := guardian.Connect(ctx, guardian.GuardOptions{Binary: opts.GuardianBinary, Reaper: opts.Reaper, Owner: opts.Owner, Parent: parent})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoGuardian, err)
	}
	return g, nil
}

// registerGuardian hands the new run to its guardian before any worker can
// start.
func registerGuardian(ctx context.Context, g *guardian.Guard, id, cgroupPath string, owner record.Owner) error {
	if err := g.Register(ctx, id, cgroupPath, owner); err != nil {
		return fmt.Errorf("%w: %w", ErrNoGuardian, err)
	}
	return nil
}
