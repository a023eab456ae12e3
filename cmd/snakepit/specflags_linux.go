package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/spec"
)

// specFlags are the CLI form of package spec: each flag parses straight
// into a field of a spec.Run or spec.Worker, with the parser the JSON form
// uses, so the CLI and the daemon API report the same errors for the same
// bad value. A new setting is one field in spec, one line here.
type specFlags struct {
	run    spec.Run
	worker spec.Worker

	idSet bool
	// err is the first error a flag's parser returned: the flag package
	// flattens it into text, this keeps its sentinel.
	err error
}

// fn registers a flag whose value is parsed by set; field and name make
// the *spec.FieldError a bad value becomes.
func (sf *specFlags) fn(fs *flag.FlagSet, name, field, usage string, set func(string) error) {
	fs.Func(name, usage, func(s string) error {
		if err := set(s); err != nil {
			var fe *spec.FieldError
			if !errors.As(err, &fe) {
				err = &spec.FieldError{Field: field, Flag: "--" + name, Err: err}
			}
			if sf.err == nil {
				sf.err = err
			}
			return err
		}
		return nil
	})
}

// boolFn is fn for a boolean flag (--name, --name=false).
func (sf *specFlags) boolFn(fs *flag.FlagSet, name, field, usage string, set func(bool)) {
	sf.fn(fs, name, field, usage, func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%w: %q is not true or false", spec.ErrBadSpec, s)
		}
		set(v)
		return nil
	})
	fs.Lookup(name).Value = boolValue{fs.Lookup(name).Value}
}

type boolValue struct{ flag.Value }

func (boolValue) IsBoolFlag() bool { return true }

// String is safe on the zero value, which the flag package makes to
// print defaults.
func (b boolValue) String() string {
	if b.Value == nil {
		return ""
	}
	return b.Value.String()
}

// addRunFlags registers the run-level settings: --run-id, --grace and the
// limits; withNS adds --net and --pid-ns (a run made by `create` has no
// process to hold namespaces). grace is the default of --grace.
func (sf *specFlags) addRunFlags(fs *flag.FlagSet, grace spec.Duration, withNS bool) {
	r := &sf.run
	r.Grace = grace
	sf.fn(fs, "run-id", "id", "run ID (7 characters of [0-9a-z]); generated when omitted", func(s string) error {
		r.ID, sf.idSet = s, true
		return nil
	})
	sf.fn(fs, "grace", "grace", fmt.Sprintf("time between SIGTERM and SIGKILL at teardown, with a unit: 500ms, 5s (default %v)", time.Duration(grace)), func(s string) error {
		d, err := spec.ParseDuration(s)
		r.Grace = spec.Duration(d)
		return err
	})
	l := &r.Limits
	sf.fn(fs, "memory-max", "limits.memory_max", "memory.max: hard memory limit of the run (bytes, or with K/M/G/T; max)", l.MemoryMax.Set)
	sf.fn(fs, "memory-high", "limits.memory_high", "memory.high: memory throttling limit of the run", l.MemoryHigh.Set)
	sf.fn(fs, "pids-max", "limits.pids_max", "pids.max: most processes and threads the run may have", l.PidsMax.Set)
	sf.fn(fs, "cpu-max", "limits.cpu_max", "cpu.max: a CPU count (1.5) or QUOTA/PERIOD in microseconds (50000/100000)", l.CPUMax.Set)
	sf.fn(fs, "cpu-weight", "limits.cpu_weight", "cpu.weight: relative CPU share, 1-10000 (kernel default 100)", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: cpu.weight %q is not a number", spec.ErrBadLimit, s)
		}
		l.CPUWeight = v
		return nil
	})
	sf.boolFn(fs, "oom-group", "limits.oom_group", "memory.oom.group (default on where the memory controller is available): an OOM kill takes the whole run", func(v bool) {
		l.OOMGroup = nil // on by default; only "off" is written
		if !v {
			l.OOMGroup = &v
		}
	})
	sf.boolFn(fs, "best-effort-limits", "best_effort_limits", "warn instead of failing when a limit's cgroup controller is unavailable", func(v bool) { r.BestEffortLimits = v })
	if withNS {
		sf.fn(fs, "net", "net", "network: host (default), none (own namespace with only lo), or NAME of a namespace in /run/netns", r.Net.Set)
		sf.boolFn(fs, "pid-ns", "pid_ns", "run the command under a minimal init in a new PID namespace; the kernel kills the whole namespace when snakepit dies (with or without a cgroup)", func(v bool) { r.PidNS = v })
	}
}

// addCredFlags registers who a command runs as (run and exec).
func (sf *specFlags) addCredFlags(fs *flag.FlagSet) {
	w := &sf.worker
	sf.fn(fs, "user", "user", "run the command as this user (name or UID)", func(s string) error { w.User = s; return nil })
	sf.fn(fs, "group", "group", "run the command with this group (name or GID; default the user's primary group)", func(s string) error { w.Group = s; return nil })
	sf.fn(fs, "groups", "groups", "supplementary groups, comma-separated (default: the user's groups from the database; empty: none)", func(s string) error {
		w.Groups = []string{}
		for _, g := range strings.Split(s, ",") {
			if g = strings.TrimSpace(g); g != "" {
				w.Groups = append(w.Groups, g)
			}
		}
		return nil
	})
	sf.boolFn(fs, "no-new-privs", "no_new_privs", "set no_new_privs on the command (default true: setuid binaries and file capabilities grant nothing)", func(v bool) {
		w.NoNewPrivs = nil
		if !v {
			w.NoNewPrivs = &v
		}
	})
}

// addWorkerFlags registers the worker-level settings of `run`.
func (sf *specFlags) addWorkerFlags(fs *flag.FlagSet) {
	w := &sf.worker
	sf.fn(fs, "setenv", "env", "set KEY=VALUE in the command's environment (repeatable; systemd-run's --setenv)", func(s string) error {
		w.Env = append(w.Env, s)
		return nil
	})
	sf.fn(fs, "chdir", "dir", "run the command in this directory", func(s string) error { w.Dir = s; return nil })
	sf.addCredFlags(fs)
	sf.fn(fs, "ready", "ready", "readiness protocol: notify (READY=1 on a NOTIFY_SOCKET of the command's own)", func(s string) error {
		if s != "notify" {
			return fmt.Errorf("%w: protocol %q: the protocol is notify (use --ready-line for a stdout line)", spec.ErrBadReady, s)
		}
		w.Ready.Notify = true
		return nil
	})
	sf.fn(fs, "ready-line", "ready.line", "ready when a line of the command's stdout matches this regular expression (output is passed through)", func(s string) error {
		w.Ready.Line = s
		return w.Ready.Validate()
	})
	sf.fn(fs, "ready-timeout", "ready_timeout", "tear the run down and exit 119 when not ready within this time (default: wait for ever)", func(s string) error {
		d, err := spec.ParseDuration(s)
		w.ReadyTimeout = spec.Duration(d)
		return err
	})
}

// parse parses args into the spec, then validates it as the daemon does.
// An unknown user or group is found here too, before anything is created.
func (sf *specFlags) parse(fs *flag.FlagSet, args []string) error {
	// A bad setting is reported in one line, as its JSON form would be;
	// the flag package's own message and usage dump are for other errors.
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if sf.err != nil {
		return usageFor(sf.err)
	}
	_, _ = buf.WriteTo(out)
	if err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError(err.Error())
	}
	if sf.idSet && sf.run.ID == "" {
		return usageFor(spec.EmptyID())
	}
	if err := sf.run.Validate(); err != nil {
		return usageFor(err)
	}
	return nil
}

// checkWorker validates the worker part once argv is known.
func (sf *specFlags) checkWorker(argv []string) error {
	sf.worker.Argv = argv
	if err := sf.worker.Validate(); err != nil {
		return usageFor(err)
	}
	if c := sf.worker.Credential(); !c.IsZero() {
		return jail.CheckCredential(c)
	}
	return nil
}

// usageFor is a spec error as the CLI reports it: named by its flag, with
// its sentinel kept for the exit status.
func usageFor(err error) error {
	var fe *spec.FieldError
	if errors.As(err, &fe) {
		return specError{fe}
	}
	return err
}
