package guardian

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// Guard is how an owner's new run is guarded: registered with the shared
// service, or, when no service can be had, watched by an exec'd guardian
// of the owner's own, which finds the run by its record.
type Guard struct {
	client *Client // nil: the exec'd guardian
	id     reaper.Identity
}

// GuardOptions say who guards a new run.
type GuardOptions struct {
	// Binary and Reaper are as in ClientOptions.
	Binary string
	Reaper *reaper.Reaper
	// Owner is the run's owner; zero means this process. Only the exec'd
	// guardian needs it (the service learns it at Register).
	Owner record.Owner
	// Parent is the run's cgroup parent; empty for a POSIX run.
	Parent string
}

// Connect finds the guardian of a new run before its record is written
// (the record names it): the service, started if none runs; when the
// service cannot be had, an exec'd per-owner guardian. An error wraps
// ErrNoBinary when neither could be had for want of a snakepit binary.
func Connect(ctx context.Context, o GuardOptions) (*Guard, error) {
	c, err := Shared(ctx, ClientOptions{Binary: o.Binary, Reaper: o.Reaper})
	if err == nil {
		return &Guard{client: c, id: c.Guardian()}, nil // id.PID 0: not known (the pid file was missing)
	}
	if errors.Is(err, ErrNoBinary) {
		return nil, err
	}
	owner := o.Owner
	if owner.PID == 0 {
		if owner, err = record.Self(); err != nil {
			return nil, err
		}
	} else if owner.Start == 0 {
		if owner, err = record.OwnerOf(owner.PID); err != nil {
			return nil, err
		}
	}
	so := Options{Owner: owner, Binary: o.Binary, Reaper: o.Reaper}
	if o.Parent != "" {
		so.Parents = []string{o.Parent}
	}
	id, serr := Start(ctx, so)
	if serr != nil {
		return nil, fmt.Errorf("service: %w; exec'd guardian: %w", err, serr)
	}
	return &Guard{id: id}, nil
}

// A nil *Guard is a run guarded by no one of ours (the caller turned
// guarding off, or brings its own guardian): its methods do nothing.

// Identity is the guardian as it goes into the run's record: PID 0 when
// the service's is not known.
func (g *Guard) Identity() reaper.Identity {
	if g == nil {
		return reaper.Identity{}
	}
	return g.id
}

// Current is the guardian now: the service the owner is connected to,
// which is a later one than Identity's should the first have died.
func (g *Guard) Current() reaper.Identity {
	if g == nil {
		return reaper.Identity{}
	}
	if g.client != nil {
		if id := g.client.Guardian(); id.PID > 0 {
			return id
		}
	}
	return g.id
}

// Register hands the run to the service; nothing for the exec'd guardian,
// which finds the run by its record's owner.
func (g *Guard) Register(ctx context.Context, id, cgroupPath string, owner record.Owner) error {
	if g == nil || g.client == nil {
		return nil
	}
	reg := Registration{ID: id, CgroupPath: cgroupPath}
	if owner.PID != os.Getpid() {
		reg.Owner = owner
	}
	return g.client.Register(ctx, reg)
}

// Unregister tells the service that the owner tore the run down itself.
func (g *Guard) Unregister(id, cgroupPath string) {
	if g != nil && g.client != nil {
		g.client.Unregister(id, cgroupPath)
	}
}
