package main

import (
	"errors"
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
}

// fn registers a flag whose value is parsed by set; field and name make
// the *spec.FieldError a bad value becomes.
func (sf *specFlags) fn(fs *flagSet, name string, short rune, arg, field, usage string, set func(string) error) *optDef {
	return fs.Func(name, short, arg, usage, func(s string) error {
		if err := set(s); err != nil {
			var fe *spec.FieldError
			if !errors.As(err, &fe) {
				err = &spec.FieldError{Field: field, Flag: "--" + name, Err: err}
			}
			return err
		}
		return nil
	})
}

// boolFn is fn for a switch (--name, --name=false).
func (sf *specFlags) boolFn(fs *flagSet, name, field, usage string, set func(bool)) *optDef {
	return sf.fn(fs, name, 0, "", field, usage, func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%w: %q is not true or false", spec.ErrBadSpec, s)
		}
		set(v)
		return nil
	})
}

// addRunFlags registers the run-level settings: --run-id, --grace and the
// limits; withNS adds --net and --pid-ns (a run made by `create` has no
// process to hold namespaces). grace is the default of --grace.
func (sf *specFlags) addRunFlags(fs *flagSet, grace spec.Duration, withNS bool) {
	r := &sf.run
	r.Grace = grace
	sf.fn(fs, "run-id", 0, "ID", "id", "run ID (7 characters of [0-9a-z]); generated when omitted", func(s string) error {
		r.ID, sf.idSet = s, true
		return nil
	})
	g := sf.fn(fs, "grace", 0, "DUR", "grace", "time between the stop signal and SIGKILL at teardown, with a unit: 500ms, 5s", func(s string) error {
		d, err := spec.ParseDuration(s)
		r.Grace = spec.Duration(d)
		return err
	})
	if grace != 0 {
		g.Def(time.Duration(grace).String())
	}
	l := &r.Limits
	sf.fn(fs, "memory-max", 0, "SIZE", "limits.memory_max", "memory.max: hard memory limit of the run (bytes, or with K/M/G/T; max)", l.MemoryMax.Set)
	sf.fn(fs, "memory-high", 0, "SIZE", "limits.memory_high", "memory.high: memory throttling limit of the run", l.MemoryHigh.Set)
	sf.fn(fs, "pids-max", 0, "N", "limits.pids_max", "pids.max: most processes and threads the run may have", l.PidsMax.Set)
	sf.fn(fs, "cpu-max", 0, "CPUS|QUOTA/PERIOD", "limits.cpu_max", "cpu.max: a CPU count (1.5) or QUOTA/PERIOD in microseconds (50000/100000)", l.CPUMax.Set)
	sf.fn(fs, "cpu-weight", 0, "N", "limits.cpu_weight", "cpu.weight: relative CPU share, 1-10000 (kernel default 100)", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: cpu.weight %q is not a number", spec.ErrBadLimit, s)
		}
		l.CPUWeight = v
		return nil
	})
	sf.boolFn(fs, "oom-group", "limits.oom_group", "memory.oom.group (default on where the memory controller is available): an OOM kill takes the whole run", func(v bool) {
		// Given, it is asked for, as in the API: true needs the memory
		// controller like any limit (the default needs nothing).
		l.OOMGroup = &v
	})
	sf.boolFn(fs, "best-effort-limits", "best_effort_limits", "warn instead of failing when a limit's cgroup controller is unavailable", func(v bool) { r.BestEffortLimits = v })
	if withNS {
		// A run of `create` is torn down by `kill` or its guardian, which
		// know no stop signal: only `run` takes one.
		sf.fn(fs, "stop-signal", 0, "SIG", "stop_signal", "first signal of a teardown, before the grace period: TERM, INT, HUP, SIGTERM, 15, ...", r.StopSignal.Set).Def("SIGTERM").Vals(stopSignals...)
		sf.fn(fs, "net", 0, "host|none|NAME", "net", "network: host, none (own namespace with only lo), or NAME of a namespace in /run/netns", r.Net.Set).Def("host").Vals("host", "none")
		sf.boolFn(fs, "pid-ns", "pid_ns", "run the command under a minimal init in a new PID namespace; the kernel kills the whole namespace when snakepit dies (with or without a cgroup)", func(v bool) { r.PidNS = v })
	}
}

// addCredFlags registers who a command runs as (run and exec).
func (sf *specFlags) addCredFlags(fs *flagSet) {
	w := &sf.worker
	sf.fn(fs, "user", 0, "USER", "user", "run the command as this user (name or UID)", func(s string) error { w.User = s; return nil }).Comp("user")
	sf.fn(fs, "group", 0, "GROUP", "group", "run the command with this group (name or GID; default the user's primary group)", func(s string) error { w.Group = s; return nil }).Comp("group")
	sf.fn(fs, "groups", 0, "A,B", "groups", "supplementary groups, comma-separated (default: the user's groups from the database; empty: none)", func(s string) error {
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
func (sf *specFlags) addWorkerFlags(fs *flagSet) {
	w := &sf.worker
	sf.fn(fs, "setenv", 'E', "KEY=VALUE", "env", "set KEY=VALUE in the command's environment (repeatable; systemd-run's --setenv)", func(s string) error {
		w.Env = append(w.Env, s)
		return nil
	})
	sf.fn(fs, "chdir", 'C', "DIR", "dir", "run the command in this directory", func(s string) error { w.Dir = s; return nil }).Comp("dir")
	sf.addCredFlags(fs)
	sf.fn(fs, "ready", 0, "notify", "ready", "readiness protocol: notify (READY=1 on a NOTIFY_SOCKET of the command's own)", func(s string) error {
		if s != "notify" {
			return fmt.Errorf("%w: protocol %q: the protocol is notify (use --ready-line for a stdout line)", spec.ErrBadReady, s)
		}
		w.Ready.Notify = true
		return nil
	})
	sf.fn(fs, "ready-line", 0, "REGEX", "ready.line", "ready when a line of the command's stdout matches this regular expression (output is passed through)", func(s string) error {
		w.Ready.Line = s
		return w.Ready.Validate()
	})
	sf.fn(fs, "ready-timeout", 0, "DUR", "ready_timeout", "tear the run down and exit 119 when not ready within this time (default: wait for ever)", func(s string) error {
		d, err := spec.ParseDuration(s)
		w.ReadyTimeout = spec.Duration(d)
		return err
	})
}

// check validates the parsed spec as the daemon does.
func (sf *specFlags) check(fs *flagSet) error {
	if sf.idSet = fs.Set("run-id"); sf.idSet && sf.run.ID == "" {
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

// stopSignals are the names completion offers for --stop-signal.
var stopSignals = []string{"SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL"}
