package main

import (
	"context"
	"fmt"
	"io"

	snakepit "github.com/snakepit/snakepit"
)

func init() {
	register("create", command{
		summary: "create an empty run and print its ID (join it with 'snakepit exec')",
		run:     cmdCreate,
	})
}

func cmdCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("create", "[flags]", stderr)
	id := fs.String("run-id", "", "run ID (7 characters of [0-9a-z]); generated when empty")
	parent := fs.String("cgroup-parent", "", "cgroup directory under which the run cgroup is made")
	ownerArg := fs.String("owner-pid", "parent", "PID recorded as the run's owner; its guardian tears the run down when it dies (\"parent\": the process that ran us; from a shell that exits at once, pass the supervisor's PID)")
	noGuardian := fs.Bool("no-guardian", false, "start no guardian (the run then lives until 'snakepit kill', or 'snakepit gc' after its owner died)")
	grace := fs.Duration("grace", 0, "grace recorded for the run (used by kill, and by the guardian)")
	// Limits are the run's (its cgroup's), so they are set here; who a
	// worker runs as and when it is ready are per worker (exec, run).
	var lf limitFlags
	addLimitFlags(fs, &lf)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("create: unexpected arguments")
	}
	if err := lf.check(); err != nil {
		return err
	}
	opid, err := ownerPID(*ownerArg)
	if err != nil {
		return err
	}
	owner, err := snakepit.OwnerOf(opid)
	if err != nil {
		return err
	}
	r, err := snakepit.Create(ctx, snakepit.Options{ID: *id, CgroupParent: *parent, Owner: owner, Grace: *grace, Limits: lf.limits})
	if err != nil {
		return err
	}
	lf.created(r, stderr)
	noteFallback(r, stderr) // runmode_linux.go
	if !*noGuardian {
		startGuardian(ctx, r, nil, *grace, stderr)
	}
	fmt.Fprintln(stdout, r.ID())
	return nil
}
