package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/runid"
)

func init() {
	register(&command{
		name:         "kill",
		summary:      "tear down runs by ID from another terminal (SIGTERM, grace, kill, remove)",
		synopsis:     "[--grace=DUR] RUNID...",
		exits:        []int{exitUnknownRun, exitInvalidID, exitPermission, exitFailure},
		interspersed: true,
		operands:     "runid",
		define: func(fs *flagSet) action {
			grace := time.Duration(-1)
			var parents []string
			fs.Duration("grace", 0, "time between SIGTERM and SIGKILL, with a unit: 500ms, 5s (default: the run's recorded grace, else 5s)", &grace)
			fs.Strings("cgroup-parent", 0, "DIR", "extra cgroup parent to search (repeatable)", &parents).Comp("dir")
			return func(ctx context.Context, ids []string, stdout, stderr io.Writer) error {
				return cmdKill(ctx, ids, grace, parents, stdout, stderr)
			}
		},
	})
}

func cmdKill(ctx context.Context, ids []string, grace time.Duration, parents []string, stdout, stderr io.Writer) error {
	if len(ids) == 0 {
		return usageError("kill: no run ID given")
	}
	// Every ID is validated before anything is killed.
	var bad []string
	for _, id := range ids {
		if err := runid.Validate(id); err != nil {
			bad = append(bad, fmt.Sprintf("%q", id))
		}
	}
	if len(bad) > 0 {
		return codedError{exitInvalidID, fmt.Errorf("%w: %s (want %d characters of [0-9a-z]); nothing killed",
			runid.ErrInvalid, strings.Join(bad, ", "), runid.Len)}
	}
	var unknown, failed []error
	for _, id := range ids {
		rep, err := killRun(ctx, id, grace, parents...)
		switch {
		case errors.Is(err, snakepit.ErrUnknownRun):
			writeErr(stderr, "kill: %v", err)
			unknown = append(unknown, err)
		case err != nil:
			writeErr(stderr, "kill %s: %v", id, err)
			failed = append(failed, err)
		case rep.Vanished:
			fmt.Fprintf(stdout, "%s: already gone\n", id)
		default:
			how := "terminated"
			if rep.Killed {
				how = "killed (" + rep.KillMechanism + ")"
			}
			fmt.Fprintf(stdout, "%s: %s, %d processes signalled, %v\n", id, how, rep.Terminated, rep.Duration.Round(10*time.Microsecond))
		}
	}
	switch {
	case len(failed) > 0:
		return codedError{sharedCode(failed), fmt.Errorf("kill: %d of %d runs failed", len(failed), len(ids))}
	case len(unknown) > 0:
		// Already reported one per line; the status says "no such run".
		return codedError{exitUnknownRun, fmt.Errorf("kill: %d of %d runs unknown", len(unknown), len(ids))}
	}
	return nil
}

// killRun is how kill tears one run down; the daemon client can replace it
// to go through the daemon's socket.
var killRun = func(ctx context.Context, id string, grace time.Duration, parents ...string) (snakepit.TeardownReport, error) {
	rep, err := inventory.KillRun(ctx, id, grace, parents...)
	if err == nil {
		// The guardian service may still watch the run's owner (`create
		// --owner-pid`); best effort: a watch left behind ends with the owner.
		_ = guardian.Forget(id)
	}
	return rep, err
}
