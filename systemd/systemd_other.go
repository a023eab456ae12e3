//go:build !linux

package systemd

import (
	"context"
	"time"
)

// IsRunning is always false off Linux.
func IsRunning() bool { return false }

// OwnCgroup returns ErrUnsupported off Linux.
func OwnCgroup() (string, error) { return "", ErrUnsupported }

// Inspect returns ErrUnsupported off Linux.
func Inspect(path string) (Delegation, error) { return Delegation{}, ErrUnsupported }

// CheckDelegated returns ErrUnsupported off Linux.
func CheckDelegated(path string) (Delegation, error) { return Delegation{}, ErrUnsupported }

// Layout is a delegated subtree prepared for runs.
type Layout struct {
	Root, Supervisor string
	Moved            int
	Controllers      []string
}

// MoveToLeaf returns ErrUnsupported off Linux.
func MoveToLeaf(root string) (Layout, error) { return Layout{}, ErrUnsupported }

// ScopeOptions configure a transient scope.
type ScopeOptions struct {
	Description string
	Slice       string
	Delegate    bool
	StopTimeout time.Duration
}

// StartTransientScope returns ErrUnsupported off Linux.
func StartTransientScope(ctx context.Context, name string, pids []int, o ScopeOptions) (string, error) {
	return "", ErrUnsupported
}

// EnterTransientScope returns ErrUnsupported off Linux.
func EnterTransientScope(ctx context.Context, prefix string, o ScopeOptions) (Delegation, error) {
	return Delegation{}, ErrUnsupported
}
