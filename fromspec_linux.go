package snakepit

import (
	"syscall"
	"time"

	"github.com/snakepit/snakepit/spec"
)

// FromSpec returns the Options that s describes. The caller adds what
// belongs to its own door (cgroup parent, owner, reaper, mode, events);
// Options mirrors spec.Run field for field (TestOptionsMirrorSpec).
func FromSpec(s spec.Run) Options {
	return Options{
		ID:         s.ID,
		Grace:      time.Duration(s.Grace),
		StopSignal: syscall.Signal(s.StopSignal),
		Limits:     s.EffectiveLimits(),
		Net:        s.Net,
		PidNS:      s.PidNS,
	}
}

// CommandFromSpec returns the Command that w describes: argv, env, dir,
// credentials and readiness. Stdio is the caller's: the CLI passes its
// own, the daemon opens w.Stdout and w.Stderr as the caller.
func CommandFromSpec(w spec.Worker) Command {
	return Command{
		Args:       w.Argv,
		Env:        w.Env,
		Dir:        w.Dir,
		Credential: w.Credential(),
		Readiness:  w.Readiness(),
	}
}
