//go:build !linux

package spawn

import (
	"context"
	"os/exec"
)

// Spawner is unavailable off Linux.
type Spawner struct{}

// New returns a Spawner whose Start always fails.
func New() *Spawner { return &Spawner{} }

// Default returns a Spawner whose Start always fails.
func Default() *Spawner { return &Spawner{} }

// Warm does nothing off Linux.
func (s *Spawner) Warm(ctx context.Context, nnp bool) error { return ErrUnsupported }

// Close does nothing.
func (s *Spawner) Close() {}

// Options is a placeholder off Linux.
type Options struct{ Cgroup string }

// Process is a placeholder off Linux.
type Process struct {
	Cmd       *exec.Cmd
	PID       int
	PidFD     int
	Placement Placement
}

// Start returns ErrUnsupported.
func (s *Spawner) Start(ctx context.Context, newCmd func() *exec.Cmd, o Options) (*Process, error) {
	return nil, ErrUnsupported
}
