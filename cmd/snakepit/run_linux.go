package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/internal/jobctl"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/spawn"
	"github.com/snakepit/snakepit/spec"
)

func init() {
	register(&command{
		name:     "run",
		summary:  "run a command in a fresh run cgroup; nothing it starts outlives it",
		synopsis: "[OPTION]... [--] CMD [ARG]...",
		exits: []int{exitNoKill, exitNotReady, exitInvalidID, exitIDInUse, exitPermission, exitNoCgroup2,
			exitTimeout, exitFailure, exitCannotExec, exitNotFound},
		passStatus: true,
		operands:   "command",
		define: func(fs *flagSet) action {
			f := &runFlags{rfd: readyFD{n: -1}}
			f.define(fs)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if err := f.check(fs, args); err != nil {
					return err
				}
				return cmdRun(ctx, f, args, stdout, stderr)
			}
		},
	})
}

// forwarded are the signals the wrapper passes on to its command.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// runFlags are the flags of `snakepit run`; other files add to them through
// runFlagHooks (limits, network, readiness, ...).
type runFlags struct {
	specFlags     // the run and its worker (specflags_linux.go)
	cgroupParent  string
	placement     placementFlags // --no-systemd, --slice, --property
	exitWithStdin bool
	dieWithParent bool
	noGuardian    bool
	runMode       // --mode, --no-cgroup, --pid-ns (runmode_linux.go)
	rfd           readyFD
	// timeout and quiet are the wrapper's own (not the run's: not in spec).
	timeout time.Duration
	quiet   bool
}

// define registers the flags of `snakepit run`, in the order help lists them.
func (f *runFlags) define(fs *flagSet) {
	f.addRunFlags(fs, spec.Duration(snakepit.DefaultGrace), true)
	f.addWorkerFlags(fs)
	fs.String("cgroup-parent", 0, "DIR", "cgroup directory under which the run cgroup is made (default: under systemd below our delegated unit or in a transient scope snakepit-<runid>.scope, else <cgroup2 root>/snakepit)", &f.cgroupParent).Comp("dir")
	f.placement.define(fs)
	fs.Duration("timeout", 0, "tear the run down (stop signal, grace, kill) and exit 124 when CMD runs longer than this, as timeout(1)", &f.timeout)
	fs.Bool("exit-with-stdin", 0, "tear the run down when stdin reaches EOF", &f.exitWithStdin)
	fs.Bool("die-with-parent", 0, "tear the run down and exit when the process that started snakepit dies", &f.dieWithParent)
	fs.Bool("no-guardian", 0, "start no guardian (a SIGKILLed wrapper then leaves the run to 'snakepit gc')", &f.noGuardian)
	f.runMode.addFlags(fs)
	fs.Func("ready-fd", 0, "N", "when ready, write \"READY <runid> <pid>\\n\" to this inherited fd and close it", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a file descriptor number", s)
		}
		f.rfd.n = n
		return nil
	})
	fs.Bool("quiet", 'q', "print no notices on stderr (the POSIX fallback, --best-effort-limits warnings, limit events); errors still", &f.quiet)
}

// check validates the flags and argv before anything is made.
func (f *runFlags) check(fs *flagSet, argv []string) error {
	if err := f.runMode.check(fs, f.run); err != nil {
		return err
	}
	if f.mode == snakepit.ModePOSIX && fs.Set("cgroup-parent") {
		return conflict(f.modeFlag(), "--cgroup-parent")
	}
	if err := f.placement.check(fs); err != nil {
		return err
	}
	if err := f.specFlags.check(fs); err != nil {
		return err
	}
	if len(argv) == 0 {
		return usageError("run: no command given")
	}
	if err := f.checkWorker(argv); err != nil {
		return err
	}
	return f.rfd.check()
}

func cmdRun(ctx context.Context, f *runFlags, argv []string, stdout, stderr io.Writer) error {
	rfd := &f.rfd
	grace := time.Duration(f.run.Grace)
	notices := stderr
	if f.quiet {
		notices = io.Discard
	}

	// Orphaned grandchildren re-parent to us and are reaped by our one
	// wait4(-1) loop.
	if err := reaper.SetSubreaper(); err != nil {
		return err
	}
	rp := reaper.New(nil)
	sigc := make(chan os.Signal, 16)
	// One after the other, before Create: run alongside Create in
	// goroutines, this set-up (the runtime's signal thread, the spawn
	// thread, os/exec's one-time pidfd probe) made the whole wrapper
	// slower, not faster: on a busy machine the extra goroutines only add
	// thread wake-ups (measured: 3-7% of `snakepit run -- /bin/true`).
	rp.Start()
	signal.Notify(sigc, forwarded...)
	if f.dieWithParent {
		signal.Notify(sigc, parentDeathSignal) // else its default action ends us
	}
	// A failure here is met again, and reported, by Start.
	_ = spawn.Default().Warm(ctx, !f.worker.Credential().NewPrivileges)
	defer func() {
		// Orphans of the run that died in its teardown were re-parented
		// to us: collect them now rather than leave their zombies to
		// init (the loop may not have run yet when we exit).
		rp.Reap()
		// The real process exits right after: undoing the set-up would
		// only delay that. A test calling run goes on, so there it is undone.
		if !execAllowed {
			signal.Stop(sigc)
			rp.Stop()
		}
	}()

	opts := snakepit.FromSpec(f.run)
	opts.CgroupParent, opts.Reaper = f.cgroupParent, rp
	// Before the first worker, Create registers the run with the guardian
	// service: a SIGKILL to us from then on is cleaned up by it.
	opts.NoGuardian, opts.GuardianBinary = f.noGuardian, selfBinary()
	opts.OnEvent = func(e snakepit.Event) { writeErr(notices, "%v", e) }
	f.runMode.apply(&opts)
	f.placement.apply(&opts)
	r, err := snakepit.Create(ctx, opts)
	if err != nil {
		return err
	}
	reportWarnings(r, notices)
	noteFallback(r, notices)
	// Asked for once our signal handler is in place (above): before
	// that, the signal would kill us and leave the run to the guardian.
	if f.dieWithParent {
		gone, err := watchParent()
		if err != nil || gone {
			teardownNow(ctx, r, stderr)
			if err != nil {
				return fmt.Errorf("--die-with-parent: %w", err)
			}
			return statusError{exitParentDied}
		}
	}
	teardown := func() {
		limit := grace + 10*time.Second
		if limit < grace {
			limit = math.MaxInt64 // a grace near the largest wrapped around: no time at all
		}
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
		defer cancel()
		if _, err := r.Teardown(tctx, grace); err != nil {
			writeErr(stderr, "teardown: %v", err)
		}
	}

	c := snakepit.CommandFromSpec(f.worker)
	if c.Env != nil {
		c.Env = jail.OverrideEnv(os.Environ(), c.Env) // --setenv adds to ours
	}
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	statusToManager(&c)
	stdinEOF := make(chan struct{})
	if f.exitWithStdin {
		pr, pw, err := os.Pipe()
		if err != nil {
			teardown()
			return err
		}
		c.Stdin = pr
		go func() {
			_, _ = io.Copy(pw, os.Stdin)
			pw.Close()
			close(stdinEOF)
		}()
		defer pr.Close()
	} else {
		c.Stdin = os.Stdin
		c.Foreground = isForegroundTTY(0)
	}

	// The command's process group has the terminal: ^Z stops it, not us,
	// and we learn of it by SIGCHLD (asked for before the start).
	var chldc chan os.Signal
	if c.Foreground {
		chldc = make(chan os.Signal, 1)
		signal.Notify(chldc, unix.SIGCHLD)
		defer signal.Stop(chldc)
	}
	w, err := r.Start(ctx, c)
	if err != nil {
		teardown()
		return commandStartError(err)
	}
	if c.Foreground {
		defer restoreForeground(0)
	}
	readyc := watchReady(ctx, r, w, rfd, !f.worker.Ready.IsZero())
	var status snakepit.ExitStatus
	var stopBy, timedOut <-chan time.Time
	if f.timeout > 0 {
		t := time.NewTimer(f.timeout)
		defer t.Stop()
		timedOut = t.C
	}
loop:
	for {
		select {
		case <-timedOut:
			// As timeout(1): the run gets the stop signal and the grace,
			// then is killed; the status says "timed out", not CMD's.
			teardown()
			_, _ = w.Wait(context.WithoutCancel(ctx))
			if f.quiet {
				return statusError{exitTimeout}
			}
			return codedError{exitTimeout, fmt.Errorf("run %s: %w after %v", r.ID(), errTimedOut, f.timeout)}
		case err := <-readyc:
			readyc = nil
			if readyFailed(err, r, stderr) {
				teardown()
				_, _ = w.Wait(context.WithoutCancel(ctx))
				return codedError{exitNotReady, fmt.Errorf("run %s: %w", r.ID(), err)}
			}
		case s := <-sigc:
			if s == parentDeathSignal {
				if parentGone() {
					// Like an owner's death: no grace.
					teardownNow(ctx, r, stderr)
					_, _ = w.Wait(context.WithoutCancel(ctx))
					return statusError{exitParentDied}
				}
				continue // only the parent's thread that forked us exited
			}
			_ = w.Signal(s.(syscall.Signal))
			if s == unix.SIGTERM && stopBy == nil {
				// SIGTERM to the wrapper stops the run: the command got
				// it and has the grace period to exit; one that ignores
				// it must not keep the run alive.
				stopBy = time.After(grace)
			}
		case <-chldc:
			if jobctl.Stopped(w.PID(), w.PidFD()) {
				suspend(0, w.PID(), nil)
			}
		case <-w.JobStops(): // --pid-ns: the init's command stopped
			suspend(0, w.PID(), func() { _ = w.ContinueJob() })
		case <-stopBy:
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if _, err := r.Teardown(tctx, 0); err != nil {
				writeErr(stderr, "teardown: %v", err)
			}
			cancel()
			status, _ = w.Wait(context.WithoutCancel(ctx))
			break loop
		case <-w.Done():
			status, _ = w.Wait(ctx)
			break loop
		case <-stdinEOF:
			stdinEOF = nil
			// Let the command read what was written before EOF (a port's
			// last message) before it is told to stop.
			drainPipe(c.Stdin.(*os.File), w.Done(), grace)
			teardown()
			status, _ = w.Wait(ctx)
			break loop
		case <-ctx.Done():
			teardown()
			status, _ = w.Wait(context.WithoutCancel(ctx))
			break loop
		}
	}
	teardown()
	if code := status.ShellCode(); code != 0 {
		return statusError{code}
	}
	return nil
}

// errTimedOut is run --timeout's: the command ran longer.
var errTimedOut = errors.New("command timed out")

// teardownNow kills the run at once, as its guardian would.
func teardownNow(ctx context.Context, r *snakepit.Run, stderr io.Writer) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := r.Teardown(tctx, 0); err != nil {
		writeErr(stderr, "teardown: %v", err)
	}
}

func writeErr(w io.Writer, format string, args ...any) {
	_, _ = io.WriteString(w, "snakepit: "+sprintf(format, args...)+"\n")
}

// drainPipe waits until the command has read everything pending in its stdin
// pipe, it exits, or limit passes. The kernel gives no event for "a pipe was
// read", so this re-reads FIONREAD every millisecond.
func drainPipe(r *os.File, done <-chan struct{}, limit time.Duration) {
	deadline := time.Now().Add(limit)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for time.Now().Before(deadline) {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		if err != nil || n == 0 {
			return
		}
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}
