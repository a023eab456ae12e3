package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

func init() {
	register(guardian.Command, command{
		summary: "internal: watch an owner and tear down its runs when it dies",
		run:     cmdGuardian,
		hidden:  true,
	})
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func cmdGuardian(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o guardian.Options
	var parents stringsFlag
	fs := newFlags(guardian.Command, "--owner-pid PID --owner-start TICKS [flags]", stderr)
	fs.IntVar(&o.Owner.PID, "owner-pid", 0, "PID of the owner to watch")
	fs.Uint64Var(&o.Owner.Start, "owner-start", 0, "the owner's start time (field 22 of /proc/PID/stat)")
	fs.StringVar(&o.Owner.BootID, "owner-boot", "", "the owner's boot ID (default: this boot)")
	fs.DurationVar(&o.Grace, "grace", 0, "teardown grace once the owner died")
	fs.Var(&parents, "cgroup-parent", "extra cgroup parent to search (repeatable)")
	var removed stringsFlag
	fs.Var(&removed, "removed-run", "run already killed and removed by the in-process guardian (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.Owner.PID <= 0 || o.Owner.Start == 0 {
		return usageError("__guardian: --owner-pid and --owner-start are required")
	}
	if o.Owner.BootID == "" {
		b, err := record.BootID()
		if err != nil {
			return err
		}
		o.Owner.BootID = b
	}
	o.Parents = parents
	for _, id := range removed {
		if err := runid.Validate(id); err != nil {
			return usageError("--removed-run: " + err.Error())
		}
	}
	o.Removed = removed
	// In our own session no terminal signal reaches us; ignore them anyway.
	// SIGTERM ends the watch without tearing anything down (the owner is
	// alive: nothing to do).
	signal.Ignore(unix.SIGHUP, unix.SIGINT, unix.SIGPIPE)
	ctx, stop := signal.NotifyContext(ctx, unix.SIGTERM)
	defer stop()

	rep, err := guardian.Run(ctx, o)
	logGuardian(o, rep, err)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// logGuardian appends one line to $SNAKEPIT_GUARDIAN_LOG, if set.
func logGuardian(o guardian.Options, rep guardian.Report, err error) {
	p := os.Getenv(guardian.LogEnv)
	if p == "" {
		return
	}
	f, ferr := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if ferr != nil {
		return
	}
	defer f.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s guardian %d owner %d: ", time.Now().Format(time.RFC3339Nano), os.Getpid(), o.Owner.PID)
	switch {
	case rep.Deduplicated:
		b.WriteString("another guardian watches this owner; exiting")
	default:
		fmt.Fprintf(&b, "owner gone (already=%v); tore down %d runs in %v", rep.OwnerWasGone, len(rep.Torn), rep.Latency)
		for _, t := range rep.Torn {
			fmt.Fprintf(&b, " [%s: %d procs, %s", t.ID, t.Report.Terminated, t.Report.KillMechanism)
			if t.Err != nil {
				fmt.Fprintf(&b, ", error: %v", t.Err)
			}
			b.WriteString("]")
		}
	}
	if err != nil {
		fmt.Fprintf(&b, "; error: %v", err)
	}
	b.WriteString("\n")
	_, _ = f.WriteString(b.String())
}

// startGuardian starts the guardian of run r's owner and records it on the
// run. Failure to start one is reported, not fatal: the run still works,
// only a SIGKILLed owner would then leave it to 'snakepit gc'.
func startGuardian(ctx context.Context, r *snakepit.Run, rp *reaper.Reaper, grace time.Duration, stderr io.Writer) {
	rec := r.Record()
	o := guardian.Options{Owner: rec.Owner, Grace: grace, Reaper: rp}
	if p := parentOf(r.CgroupPath()); p != "" {
		o.Parents = []string{p}
	}
	// The in-process guardian (a clone of us, no exec) where it can be
	// used; the exec'd one otherwise (guardian_fast_linux_amd64.go).
	g, err := guardian.StartFast(ctx, o, r.CgroupPath())
	if errors.Is(err, guardian.ErrNoFast) {
		g, err = guardian.Start(ctx, o)
	}
	if err != nil {
		writeErr(stderr, "warning: no guardian: %v", err)
		return
	}
	if g.Start != 0 {
		if err := r.SetGuardian(g); err != nil {
			writeErr(stderr, "warning: recording guardian %d: %v", g.PID, err)
		}
	}
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// ownerFlag parses --owner-pid for create: "parent" (the default) or a PID.
func ownerPID(v string) (int, error) {
	if v == "" || v == "parent" {
		return os.Getppid(), nil
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, usageError(fmt.Sprintf("--owner-pid %q: want a PID or \"parent\"", v))
	}
	return pid, nil
}
