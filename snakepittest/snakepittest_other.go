//go:build !linux

package snakepittest

import (
	"context"
	"fmt"
	"os/exec"
)

// TB is the part of testing.TB the helper uses.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Logf(format string, args ...any)
}

// Leak is a process found alive in the run when the test ended.
type Leak struct {
	PID     int
	Cmdline string
}

func (l Leak) String() string { return fmt.Sprintf("pid %d: %s", l.PID, l.Cmdline) }

// Run is unavailable off Linux.
type Run struct{}

// New skips the test: runs need Linux.
func New(t TB) *Run {
	t.Helper()
	t.Skipf("snakepittest: needs Linux")
	return nil
}

// ID returns "".
func (r *Run) ID() string { return "" }

// CgroupPath returns "".
func (r *Run) CgroupPath() string { return "" }

// Command returns a plain exec.Cmd.
func (r *Run) Command(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }

// CommandContext returns a plain exec.Cmd.
func (r *Run) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// Procs returns nil.
func (r *Run) Procs() []Leak { return nil }

// Close returns nil.
func (r *Run) Close() []Leak { return nil }
