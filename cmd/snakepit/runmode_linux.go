package main

import (
	"errors"
	"flag"
	"io"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/record"
)

// runMode are the containment flags of `snakepit run`: --mode and
// --no-cgroup.
type runMode struct {
	mode snakepit.Mode
}

func (m *runMode) addFlags(fs *flag.FlagSet) {
	fs.Func("mode", "containment: auto (a run cgroup; POSIX mode, with a notice, when cgroup2 is missing or refused), cgroup (never fall back) or posix", func(s string) error {
		v, err := snakepit.ParseMode(s)
		m.mode = v
		return err
	})
	fs.BoolFunc("no-cgroup", "POSIX mode (same as --mode posix): process groups, subreaper, run-ID marker and /proc scans instead of a cgroup", func(string) error {
		m.mode = snakepit.ModePOSIX
		return nil
	})
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
