//go:build linux

package testenv

import (
	"testing"

	"github.com/snakepit/snakepit/cgroup"
)

// RequireCgroup2 needs root and a writable cgroup2 mount; it returns the
// mount.
func RequireCgroup2(t testing.TB) cgroup.Mount {
	t.Helper()
	RequireRoot(t)
	m, err := cgroup.FindMount()
	if err != nil {
		Missing(t, "needs cgroup2: %v", err)
	}
	return m
}
