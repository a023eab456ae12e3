//go:build linux

package guardian

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Main is the body of `snakepit __guardian ARGS`: args are what Args or
// ServiceArgs built. A per-owner guardian returns once the owner's runs are
// torn down; the service returns after its idle time with nothing to watch.
func Main(ctx context.Context, args []string) error {
	o, serve, err := ParseArgs(args)
	if err != nil {
		return err
	}
	// A guardian waits, and acts once an owner dies, on the CPUs that the
	// owner's death is using too. With one P a wake-up runs what it woke
	// on its own thread, and no second thread spins up looking for work:
	// the service's reaction to a 256 MiB Go owner's SIGKILL went from
	// 1.74x to 1.45x a bare kill (docs/BENCHMARKS.md).
	runtime.GOMAXPROCS(1)
	// In our own session no terminal signal reaches us; ignore them anyway.
	// SIGTERM ends the watch without tearing anything down (the owners
	// are alive: nothing to do).
	signal.Ignore(unix.SIGHUP, unix.SIGINT, unix.SIGPIPE)
	ctx, stop := signal.NotifyContext(ctx, unix.SIGTERM)
	defer stop()
	if serve {
		return serveInherited(ctx)
	}
	rep, err := Run(ctx, o)
	logReport(o, rep, err)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// logf appends one line to $SNAKEPIT_GUARDIAN_LOG, if set.
func logf(format string, args ...any) {
	p := os.Getenv(LogEnv)
	if p == "" {
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = fmt.Fprintf(f, "%s guardian %d: %s\n", time.Now().Format(time.RFC3339Nano), os.Getpid(), fmt.Sprintf(format, args...))
}

func logReport(o Options, rep Report, err error) {
	var b strings.Builder
	fmt.Fprintf(&b, "owner %d: ", o.Owner.PID)
	if rep.Deduplicated {
		b.WriteString("another guardian watches this owner; exiting")
	} else {
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
	logf("%s", b.String())
}
