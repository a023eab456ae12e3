package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/systemd/sdnotify"
)

// readyFD is `snakepit run --ready-fd N`: when the worker is ready,
// "READY <runid> <pid>\n" goes to the inherited fd N, which is then closed.
type readyFD struct {
	n int
	f *os.File
}

// check verifies the fd and keeps it from the command.
func (r *readyFD) check() error {
	if r.n < 0 {
		return nil
	}
	if r.n <= 2 {
		return usageError("--ready-fd must be 3 or above")
	}
	if _, err := unix.FcntlInt(uintptr(r.n), unix.F_GETFD, 0); err != nil {
		return usageError(fmt.Sprintf("--ready-fd %d: not an open file descriptor", r.n))
	}
	// The command must not inherit it: only we write the line, and the
	// reader's EOF must mean "we are done with it".
	unix.CloseOnExec(r.n)
	r.f = os.NewFile(uintptr(r.n), "ready-fd")
	return nil
}

// reportWarnings reports what --best-effort-limits left out.
func reportWarnings(r *snakepit.Run, stderr io.Writer) {
	for _, w := range r.Warnings() {
		writeErr(stderr, "warning: %v; running without it (--best-effort-limits)", w)
	}
}

// statusToManager passes the command's STATUS= on to our own service
// manager when we took NOTIFY_SOCKET from the command.
func statusToManager(c *snakepit.Command) {
	if c.Readiness.Notify && os.Getenv("NOTIFY_SOCKET") != "" {
		c.Readiness.OnStatus = func(s string) { _ = sdnotify.Status(s) }
	}
}

// watchReady waits for the worker's readiness. When ready it reports to
// --ready-fd and to our own service manager, and the channel is never
// written; otherwise the channel gets the error (see readyFailed).
func watchReady(ctx context.Context, r *snakepit.Run, w *snakepit.Worker, rfd *readyFD, configured bool) <-chan error {
	if !configured && rfd.f == nil {
		// Nothing to report: no goroutine (each one started wakes a
		// thread, a cost every `snakepit run` would pay for nothing).
		return nil
	}
	c := make(chan error, 1)
	go func() {
		info, err := w.WaitReady(ctx)
		if err != nil {
			if rfd.f != nil {
				rfd.f.Close()
			}
			if errors.Is(err, snakepit.ErrNotReady) || errors.Is(err, snakepit.ErrExitedBeforeReady) {
				c <- err
			}
			return
		}
		if rfd.f != nil {
			fmt.Fprintf(rfd.f, "READY %s %d\n", r.ID(), w.PID())
			rfd.f.Close()
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
		probe, err := limits.Probe("")
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
