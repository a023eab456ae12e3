package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/systemd/sdnotify"
)

// jailFlags are the jail settings of `snakepit run`: limits, network,
// credentials, readiness. cmdRun calls addJailFlags, then check after
// parsing, options for snakepit.Options, command for the Command, and
// watchReady once the worker runs.
type jailFlags struct {
	limitFlags

	net string

	credFlags

	ready        string
	readyLine    string
	readyTimeout time.Duration
	readyFD      int

	// parsed by check
	netCfg snakepit.Net
	readyF *os.File
}

// credFlags say who a command runs as, shared by run and exec.
type credFlags struct {
	user, group string
	groups      optString
	noNewPrivs  bool
}

func addCredFlags(fs *flag.FlagSet, c *credFlags) {
	fs.StringVar(&c.user, "user", "", "run the command as this user (name or UID)")
	fs.StringVar(&c.group, "group", "", "run the command with this group (name or GID; default the user's primary group)")
	fs.Var(&c.groups, "groups", "supplementary groups, comma-separated (default: the user's groups from the database; empty: none)")
	fs.BoolVar(&c.noNewPrivs, "no-new-privs", true, "set no_new_privs on the command (setuid binaries and file capabilities grant nothing)")
}

// check rejects an unknown user or group before anything is created (a
// usage error through ErrUnknownUser; a failing user database is not one).
func (c *credFlags) check() error {
	if c.user != "" || c.group != "" || c.groups.set {
		return c.credential().Check()
	}
	return nil
}

// limitFlags are the resource-limit flags, shared by run and create.
type limitFlags struct {
	memoryMax, memoryHigh, pidsMax, cpuMax string
	cpuWeight                              uint64
	oomGroup                               bool
	bestEffort                             bool

	limits snakepit.Limits // parsed by check
}

func addLimitFlags(fs *flag.FlagSet, l *limitFlags) {
	fs.StringVar(&l.memoryMax, "memory-max", "", "memory.max: hard memory limit of the run (bytes, or with K/M/G/T; max)")
	fs.StringVar(&l.memoryHigh, "memory-high", "", "memory.high: memory throttling limit of the run")
	fs.StringVar(&l.pidsMax, "pids-max", "", "pids.max: most processes and threads the run may have")
	fs.StringVar(&l.cpuMax, "cpu-max", "", "cpu.max: a CPU count (1.5) or QUOTA/PERIOD in microseconds (50000/100000)")
	fs.Uint64Var(&l.cpuWeight, "cpu-weight", 0, "cpu.weight: relative CPU share, 1-10000 (kernel default 100)")
	fs.BoolVar(&l.oomGroup, "oom-group", true, "memory.oom.group: an OOM kill takes the whole run (where the memory controller is available)")
	fs.BoolVar(&l.bestEffort, "best-effort-limits", false, "warn instead of failing when a limit's cgroup controller is unavailable")
}

// optString is a string flag that remembers whether it was given.
type optString struct {
	val string
	set bool
}

func (o *optString) String() string { return o.val }
func (o *optString) Set(s string) error {
	o.val, o.set = s, true
	return nil
}

func addJailFlags(fs *flag.FlagSet) *jailFlags {
	j := &jailFlags{}
	addLimitFlags(fs, &j.limitFlags)
	fs.StringVar(&j.net, "net", "host", "network: host, none (own namespace with only lo), or NAME of a namespace in /run/netns")
	addCredFlags(fs, &j.credFlags)
	fs.StringVar(&j.ready, "ready", "", "readiness protocol: notify (READY=1 on a NOTIFY_SOCKET of the command's own)")
	fs.StringVar(&j.readyLine, "ready-line", "", "ready when a line of the command's stdout matches this regular expression (output is passed through)")
	fs.DurationVar(&j.readyTimeout, "ready-timeout", 0, "tear the run down and exit 119 when not ready within this time (0: wait for ever)")
	fs.IntVar(&j.readyFD, "ready-fd", -1, "when ready, write \"READY <runid> <pid>\\n\" to this inherited fd and close it")
	return j
}

// check parses and validates the flags; it runs before anything is created.
func (j *jailFlags) check() error {
	if err := j.limitFlags.check(); err != nil {
		return err
	}
	var err error
	if j.netCfg, err = snakepit.ParseNet(j.net); err != nil {
		return usageError("--net: " + err.Error())
	}
	switch j.ready {
	case "", "notify":
	default:
		return usageError(fmt.Sprintf("--ready %q: the protocol is notify (use --ready-line for a stdout line)", j.ready))
	}
	if j.readyTimeout < 0 {
		return usageError("--ready-timeout must not be negative")
	}
	if j.readyTimeout > 0 && j.ready == "" && j.readyLine == "" {
		return usageError("--ready-timeout needs --ready notify or --ready-line")
	}
	// An unknown user or group is a bad argument: say so before a run
	// cgroup is made (Start would find out only after).
	if err := j.credFlags.check(); err != nil {
		return err
	}
	if j.readyFD >= 0 {
		if j.readyFD <= 2 {
			return usageError("--ready-fd must be 3 or above")
		}
		if _, err := unix.FcntlInt(uintptr(j.readyFD), unix.F_GETFD, 0); err != nil {
			return usageError(fmt.Sprintf("--ready-fd %d: not an open file descriptor", j.readyFD))
		}
		// The command must not inherit it: only we write the line, and the
		// reader's EOF must mean "we are done with it".
		unix.CloseOnExec(j.readyFD)
		j.readyF = os.NewFile(uintptr(j.readyFD), "ready-fd")
	}
	return nil
}

// check parses the limit flags into l.limits.
func (l *limitFlags) check() error {
	var err error
	if l.memoryMax != "" {
		if l.limits.MemoryMax, err = snakepit.ParseBytes(l.memoryMax); err != nil {
			return usageError("--memory-max: " + err.Error())
		}
	}
	if l.memoryHigh != "" {
		if l.limits.MemoryHigh, err = snakepit.ParseBytes(l.memoryHigh); err != nil {
			return usageError("--memory-high: " + err.Error())
		}
	}
	if l.pidsMax != "" {
		if l.limits.PidsMax, err = snakepit.ParsePids(l.pidsMax); err != nil {
			return usageError("--pids-max: " + err.Error())
		}
	}
	if l.cpuMax != "" {
		if l.limits.CPUMax, err = snakepit.ParseCPUMax(l.cpuMax); err != nil {
			return usageError("--cpu-max: " + err.Error())
		}
	}
	l.limits.CPUWeight = l.cpuWeight
	if !l.oomGroup {
		off := false
		l.limits.OOMGroup = &off
	}
	l.limits.BestEffort = l.bestEffort
	if err := l.limits.Validate(); err != nil {
		return usageError(err.Error())
	}
	return nil
}

// options adds the run-level settings to o.
func (j *jailFlags) options(o snakepit.Options, stderr io.Writer) snakepit.Options {
	o.Limits = j.limits
	o.Net = j.netCfg
	o.OnEvent = func(e snakepit.Event) { writeErr(stderr, "%v", e) }
	return o
}

// created reports what --best-effort-limits left out.
func (l *limitFlags) created(r *snakepit.Run, stderr io.Writer) {
	for _, w := range r.Warnings() {
		writeErr(stderr, "warning: %v; running without it (--best-effort-limits)", w)
	}
}

// credential is who the command runs as.
func (j *credFlags) credential() snakepit.Credential {
	c := snakepit.Credential{User: j.user, Group: j.group, NewPrivileges: !j.noNewPrivs}
	if j.groups.set {
		c.Groups = []string{}
		for _, g := range strings.Split(j.groups.val, ",") {
			if g = strings.TrimSpace(g); g != "" {
				c.Groups = append(c.Groups, g)
			}
		}
	}
	return c
}

// command adds the worker-level settings to c.
func (j *jailFlags) command(c *snakepit.Command) {
	c.Credential = j.credential()
	c.Readiness = snakepit.Readiness{
		Notify:  j.ready == "notify",
		Line:    j.readyLine,
		Timeout: snakepit.Duration(j.readyTimeout),
	}
	if c.Readiness.Notify && os.Getenv("NOTIFY_SOCKET") != "" {
		// We took NOTIFY_SOCKET from the command; pass its status on.
		c.Readiness.OnStatus = func(s string) { _ = sdnotify.Status(s) }
	}
}

// watchReady waits for the worker's readiness. When ready it reports to
// --ready-fd and to our own service manager, and the channel is never
// written; otherwise the channel gets the error (see readyFailed).
func (j *jailFlags) watchReady(ctx context.Context, r *snakepit.Run, w *snakepit.Worker, stderr io.Writer) <-chan error {
	c := make(chan error, 1)
	configured := j.ready != "" || j.readyLine != ""
	go func() {
		info, err := w.WaitReady(ctx)
		if err != nil {
			if j.readyF != nil {
				j.readyF.Close()
			}
			if errors.Is(err, snakepit.ErrNotReady) || errors.Is(err, snakepit.ErrExitedBeforeReady) {
				c <- err
			}
			return
		}
		if j.readyF != nil {
			fmt.Fprintf(j.readyF, "READY %s %d\n", r.ID(), w.PID())
			j.readyF.Close()
		}
		if configured && os.Getenv("NOTIFY_SOCKET") != "" {
			msg := []string{"READY=1"}
			if info.Status != "" {
				msg = append(msg, "STATUS="+info.Status)
			}
			_, _ = sdnotify.Notify(msg...)
		}
	}()
	return c
}

// readyFailed handles an error from watchReady: it reports whether the run
// must be torn down with exit status 119 (not ready in time). A worker that
// exited before it was ready is only reported: its own exit status is
// passed on as usual.
func readyFailed(err error, r *snakepit.Run, stderr io.Writer) bool {
	if errors.Is(err, snakepit.ErrNotReady) {
		return true
	}
	writeErr(stderr, "run %s: %v", r.ID(), err)
	return false
}

func init() {
	addDoctorCheck("limits", func(ctx context.Context, e *doctorEnv) (string, string) {
		probe, err := snakepit.ProbeLimits("")
		if err != nil {
			return checkWarn, fmt.Sprintf("cannot probe: %v", err)
		}
		var ok, missing, flags []string
		for _, c := range []struct{ ctrl, flags string }{
			{"memory", "--memory-max/--memory-high"},
			{"pids", "--pids-max"},
			{"cpu", "--cpu-max/--cpu-weight"},
		} {
			perr := probe[c.ctrl]
			if perr == nil {
				ok = append(ok, c.ctrl)
				continue
			}
			why := perr.Error()
			var ce *snakepit.ControllerError
			if errors.As(perr, &ce) {
				why, _, _ = strings.Cut(ce.Reason, " (hybrid host")
			}
			missing = append(missing, c.ctrl+": "+why)
			flags = append(flags, c.flags)
		}
		if len(missing) == 0 {
			return checkOK, "memory, pids and cpu controllers available: every limit works"
		}
		detail := strings.Join(missing, "; ")
		if len(ok) > 0 {
			detail = "available: " + strings.Join(ok, ", ") + "; " + detail
		}
		detail += "; " + strings.Join(flags, ", ")
		return checkWarn, detail + " fail unless --best-effort-limits"
	})
}

// statColumns renders a run's memory.current and CPU time for ps ("-"
// where not available).
func statColumns(s *snakepit.Stats) (mem, cpu string) {
	mem, cpu = "-", "-"
	if s == nil {
		return
	}
	if s.MemoryCurrent != nil {
		mem = humanBytes(*s.MemoryCurrent)
	}
	if s.CPUUsageUsec != nil {
		cpu = (time.Duration(*s.CPUUsageUsec) * time.Microsecond).Round(10 * time.Millisecond).String()
	}
	return
}

// humanBytes renders n with one decimal in K, M or G.
func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprint(n)
}
