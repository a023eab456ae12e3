package main

import (
	"errors"
	"io"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spec"
)

// runMode are the containment flags of `snakepit run`: --mode and
// --no-cgroup.
type runMode struct {
	mode     snakepit.Mode
	explicit bool // --mode given
	noCgroup bool
}

func (m *runMode) addFlags(fs *flagSet) {
	fs.Func("mode", 0, "auto|cgroup|posix", "containment: auto (a run cgroup; POSIX mode, with a notice, when cgroup2 is missing or refused), cgroup (never fall back) or posix", func(s string) error {
		v, err := snakepit.ParseMode(s)
		if err != nil {
			return err
		}
		m.mode, m.explicit = v, true
		return nil
	}).Def("auto").Vals("auto", "cgroup", "posix")
	fs.BoolFunc("no-cgroup", 0, "POSIX mode (same as --mode posix): process groups, subreaper, run-ID marker and /proc scans instead of a cgroup", func(v bool) error {
		m.noCgroup = v
		return nil
	})
}

// check refuses contradictory containment flags: --no-cgroup with another
// --mode than posix, and cgroup limits in POSIX mode (unless best effort).
func (m *runMode) check(fs *flagSet, r spec.Run) error {
	if m.noCgroup {
		if m.explicit && m.mode != snakepit.ModePOSIX {
			return conflict("--mode "+m.mode.String(), "--no-cgroup")
		}
		m.mode = snakepit.ModePOSIX
	}
	if m.mode == snakepit.ModePOSIX && !r.BestEffortLimits {
		for _, l := range []string{"memory-max", "memory-high", "pids-max", "cpu-max", "cpu-weight", "oom-group"} {
			if fs.Set(l) {
				return conflict(m.modeFlag(), "--"+l+" (limits need a cgroup; --best-effort-limits drops them)")
			}
		}
	}
	return nil
}

// modeFlag names the flag that chose POSIX mode.
func (m *runMode) modeFlag() string {
	if m.noCgroup {
		return "--no-cgroup"
	}
	return "--mode posix"
}

// apply sets the containment options of the run made by `snakepit run`. The
// wrapper owns exactly one run and has no other children than its workers
// and its guardian, so every orphan re-parented to it is the run's.
func (m *runMode) apply(o *snakepit.Options) {
	o.Mode = m.mode
	o.AdoptOrphans = true
}

// noteFallback says, in one line, that an auto-mode run fell back to POSIX
// mode and why.
func noteFallback(r *snakepit.Run, stderr io.Writer) {
	if err := r.Fallback(); err != nil {
		writeErr(stderr, "cgroup v2 unusable (%v); using POSIX mode (process groups, run-ID marker, /proc scan: weaker, see README)", err)
	}
}

// isPOSIXRun reports whether a run that Lookup did not find (lookupErr) is
// a live POSIX run: one with a file record. `snakepit exec` joins such a
// run through the run-ID marker in the environment only; there is no cgroup
// to enter.
func isPOSIXRun(lookupErr error, id string) bool {
	if !errors.Is(lookupErr, snakepit.ErrUnknownRun) {
		return false
	}
	rec, err := record.Read(id)
	return err == nil && rec.Mechanism == record.MechanismPOSIX && rec.Owner.Alive()
}
