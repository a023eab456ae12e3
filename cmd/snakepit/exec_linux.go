package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/jail"
)

func init() {
	register(&command{
		name:       "exec",
		summary:    "join an existing run and exec a command in it (the command keeps our PID)",
		synopsis:   "[OPTION]... RUNID [--] CMD [ARG]...",
		exits:      []int{exitUnknownRun, exitInvalidID, exitPermission, exitFailure, exitCannotExec, exitNotFound},
		passStatus: true,
		operands:   "runid command",
		define: func(fs *flagSet) action {
			var parent string
			var sf specFlags
			fs.String("cgroup-parent", 0, "DIR", "cgroup directory holding the run (default: search the known parents)", &parent).Comp("dir")
			sf.addCredFlags(fs)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				return cmdExec(ctx, &sf, parent, args)
			}
		},
	})
}

func cmdExec(ctx context.Context, sf *specFlags, parentArg string, rest []string) error {
	parent := &parentArg
	if c := sf.worker.Credential(); !c.IsZero() {
		if err := jail.CheckCredential(c); err != nil {
			return err
		}
	}
	if len(rest) < 1 {
		return usageError("exec: no run ID given")
	}
	id := rest[0]
	rest = rest[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return usageError("exec: no command given")
	}
	var parents []string
	if *parent != "" {
		parents = []string{*parent}
	}
	g, err := inventory.Lookup(id, parents...)
	if err != nil {
		if !isPOSIXRun(err, id) { // runmode_linux.go
			return codedIfUnknown(err)
		}
		g = nil // a POSIX run: joined by the run-ID marker alone
	}
	path, err := exec.LookPath(rest[0])
	if err != nil {
		return startError{err}
	}
	// Writing "0" moves the writer itself: no window in which a child of
	// ours could be outside the run.
	if g != nil {
		if err := g.EnterSelf(); err != nil {
			if errors.Is(err, cgroup.ErrNotExist) {
				// Torn down since the lookup: no such run, as then.
				return codedError{exitUnknownRun, fmt.Errorf("%w: %s: %w", snakepit.ErrUnknownRun, id, err)}
			}
			return err
		}
	}
	env := snakepit.RunEnv(os.Environ(), id)
	// Joined first (above): an unprivileged identity could not write
	// cgroup.procs any more.
	if err := jail.ExecAs(sf.worker.Credential(), path, rest, env); err != nil {
		// 126/127 only for the command; a refused setuid is our failure.
		if _, ok := errors.AsType[*jail.ExecError](err); ok {
			return startError{err}
		}
		return err
	}
	return nil
}
