package snakepit

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// ErrNoGuardian means Create could not have the run guarded: no guardian
// service runs and no snakepit binary was found to start one (set
// Options.GuardianBinary or $SNAKEPIT_BIN, put snakepit on $PATH, or set
// Options.NoGuardian).
var ErrNoGuardian = errors.New("no guardian for the run")

// guard is how a run is guarded: a registration with the guardian
// service (client), or the exec'd per-owner guardian (fallback).
type guard struct {
	client *guardian.Client
	id     reaper.Identity
}

// connectGuardian finds the guardian of a new run before its record is
// written (the record names it): the service, started if none runs; when
// the service cannot be had, the exec'd per-owner guardian. nil when the
// caller turned guarding off or brings its own (Options.Guardian).
func connectGuardian(ctx context.Context, opts *Options, parent string) (*guard, error) {
	if opts.NoGuardian || opts.Guardian != nil {
		return nil, nil
	}
	c, err := guardian.Shared(ctx, guardian.ClientOptions{Binary: opts.GuardianBinary, Reaper: opts.Reaper})
	if err == nil {
		return &guard{client: c, id: c.Guardian()}, nil // id.PID 0: not known (the pid file was missing)
	}
	if errors.Is(err, guardian.ErrNoBinary) {
		return nil, fmt.Errorf("%w: %w", ErrNoGuardian, err)
	}
	// The fallback: a guardian process of our own for this owner.
	owner := opts.Owner
	if owner.PID == 0 {
		if owner, err = record.Self(); err != nil {
			return nil, err
		}
	} else if owner.Start == 0 {
		if owner, err = record.OwnerOf(owner.PID); err != nil {
			return nil, err
		}
	}
	o := guardian.Options{Owner: owner, Grace: 0, Binary: opts.GuardianBinary, Reaper: opts.Reaper}
	if parent != "" {
		o.Parents = []string{parent}
	}
	id, serr := guardian.Start(ctx, o)
	if serr != nil {
		return nil, fmt.Errorf("%w: service: %w; exec'd guardian: %w", ErrNoGuardian, err, serr)
	}
	return &guard{id: id}, nil
}

// register hands the run to the service (nothing for the fallback, which
// finds the run by its record's owner).
func (g *guard) register(ctx context.Context, id, cgroupPath string, owner record.Owner) error {
	if !g.connected() {
		return nil
	}
	reg := guardian.Registration{ID: id, CgroupPath: cgroupPath}
	if owner.PID != os.Getpid() {
		reg.Owner = owner
	}
	if err := g.client.Register(ctx, reg); err != nil {
		return fmt.Errorf("%w: %w", ErrNoGuardian, err)
	}
	return nil
}

// connected reports whether the run is guarded by the service.
func (g *guard) connected() bool { return g != nil && g.client != nil }

func (g *guard) unregister(id, cgroupPath string) {
	if g.connected() {
		g.client.Unregister(id, cgroupPath)
	}
}
