//go:build linux

package systemd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/snakepit/snakepit/cgroup"
)

// ScopeOptions configure a transient scope.
type ScopeOptions struct {
	// Description is the unit's description.
	Description string
	// Slice places the scope; empty leaves systemd's default (system.slice
	// for the system manager). Delegation exists on scopes and services,
	// never on slices.
	Slice string
	// Delegate asks systemd to hand the scope's cgroup subtree to us
	// (Delegate=yes): systemd then never writes below it.
	Delegate bool
	// StopTimeout is the scope's TimeoutStopSec (SIGTERM to SIGKILL when
	// the scope is stopped); zero leaves systemd's default.
	StopTimeout time.Duration
	// BindsTo names units whose stop stops the scope too (BindsTo=): the
	// unit of the scope's owner, so that stopping or killing that unit
	// ends the scope as well.
	BindsTo []string
	// Properties are further unit properties (ParseProperty), applied
	// after the ones above.
	Properties []Property
	// User asks the calling user's service manager (systemd --user)
	// instead of the system manager.
	User bool
}

// StartTransientScope asks systemd to create the transient scope unit name
// (it must end in ".scope") holding pids, waits for the job's result and
// returns the scope's cgroup path relative to the cgroup2 root (systemd's
// ControlGroup property). It talks to the system bus, or to systemd's
// private socket when no bus broker runs and we are root.
//
// ctx bounds the whole call, connection included. When ctx ends while the
// job is queued, ctx.Err() is returned; systemd may still complete the job
// afterwards (the pids then end up in the scope).
func StartTransientScope(ctx context.Context, name string, pids []int, o ScopeOptions) (string, error) {
	if !IsRunning() {
		return "", ErrNotRunning
	}
	conn, err := connect(ctx, o.User)
	if err != nil {
		return "", err
	}
	defer conn.Close()

	up := make([]uint32, len(pids))
	for i, p := range pids {
		up[i] = uint32(p)
	}
	desc := o.Description
	if desc == "" {
		desc = "snakepit " + name
	}
	props := []sddbus.Property{
		sddbus.PropDescription(desc),
		sddbus.PropPids(up...),
		{Name: "Delegate", Value: dbus.MakeVariant(o.Delegate)},
		// A failed scope would otherwise stay loaded until reset-failed.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if o.Slice != "" {
		props = append(props, sddbus.PropSlice(o.Slice))
	}
	if o.StopTimeout > 0 {
		props = append(props, sddbus.Property{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(uint64(o.StopTimeout / time.Microsecond))})
	}
	if len(o.BindsTo) > 0 {
		props = append(props, sddbus.Property{Name: "BindsTo", Value: dbus.MakeVariant(o.BindsTo)})
	}
	for _, p := range o.Properties {
		props = append(props, sddbus.Property{Name: p.Name, Value: dbus.MakeVariant(p.Value)})
	}
	// Buffered: go-systemd's signal dispatcher sends the result while
	// holding its lock, and must never block on a caller that gave up.
	ch := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, name, "fail", props, ch); err != nil {
		return "", fmt.Errorf("start transient scope %s: %w", name, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return "", &JobError{Unit: name, Result: res}
		}
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for scope %s: %w", name, ctx.Err())
	}
	p, err := conn.GetUnitTypePropertyContext(ctx, name, "Scope", "ControlGroup")
	if err != nil {
		return "", fmt.Errorf("scope %s: ControlGroup: %w", name, err)
	}
	cg, ok := p.Value.Value().(string)
	if !ok || cg == "" {
		return "", fmt.Errorf("scope %s: no ControlGroup (%v)", name, p.Value)
	}
	return cg, nil
}

// connect opens a connection to the system manager (root: its private
// socket, no bus broker in the way; otherwise the system bus) or to the
// calling user's manager.
func connect(ctx context.Context, user bool) (*sddbus.Conn, error) {
	var conn *sddbus.Conn
	var err error
	if user {
		conn, err = sddbus.NewUserConnectionContext(ctx)
	} else {
		conn, err = sddbus.NewWithContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return conn, nil
}

// EnterTransientScope moves the calling process into a new transient scope
// "<prefix>-<pid>.scope" with Delegate=yes and returns its absolute cgroup
// path after checking that we are really there and that it is delegated.
func EnterTransientScope(ctx context.Context, prefix string, o ScopeOptions) (Delegation, error) {
	o.Delegate = true
	name := scopeName(prefix, os.Getpid())
	rel, err := StartTransientScope(ctx, name, []int{os.Getpid()}, o)
	if err != nil {
		return Delegation{}, err
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return Delegation{}, err
	}
	want := filepath.Join(m.Path, rel)
	got, err := OwnCgroup()
	if err != nil {
		return Delegation{}, err
	}
	if got != want {
		return Delegation{}, fmt.Errorf("after starting %s we are in %s, not %s", name, got, want)
	}
	return CheckDelegated(want)
}
