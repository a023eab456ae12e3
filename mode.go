package snakepit

import (
	"errors"
	"fmt"
)

// Mode selects how a run contains its processes.
type Mode string

const (
	// ModeAuto uses a run cgroup when this host allows one, and falls back
	// to ModePOSIX only when creating it fails with cgroup.ErrNoCgroup2 (no
	// cgroup2 mounted) or cgroup.ErrPermission (not root, no delegation,
	// read-only cgroupfs). Run.Fallback then says why.
	ModeAuto Mode = ""
	// ModeCgroup requires a run cgroup: any failure to make one is an
	// error.
	ModeCgroup Mode = "cgroup"
	// ModePOSIX never uses a cgroup: process groups, the subreaper, the
	// run-ID marker and /proc scans with pidfds (see reaper.Family).
	// With Options.Reaper or AdoptOrphans set, Create makes the calling
	// process a child subreaper (orphans are then members). A setsid'd
	// process that also scrubs its argv and environment can escape it
	// unless the run uses a PID namespace (Options.PidNS).
	ModePOSIX Mode = "posix"
)

// ErrBadMode means a mode name is not auto, cgroup or posix.
var ErrBadMode = errors.New("unknown mode (want auto, cgroup or posix)")

// ParseMode parses "auto" (or ""), "cgroup" or "posix".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "auto":
		return ModeAuto, nil
	case string(ModeCgroup):
		return ModeCgroup, nil
	case string(ModePOSIX):
		return ModePOSIX, nil
	}
	return ModeAuto, fmt.Errorf("%w: %q", ErrBadMode, s)
}

func (m Mode) String() string {
	if m == ModeAuto {
		return "auto"
	}
	return string(m)
}
