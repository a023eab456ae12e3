package main

import (
	"context"
	"fmt"
	"io"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/record"
)

func init() {
	register("create", command{
		summary: "create an empty run and print its ID (join it with 'snakepit exec')",
		run:     cmdCreate,
	})
}

func cmdCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("create", "[flags]", stderr)
	var sf specFlags
	sf.addRunFlags(fs, 0, false)
	parent := fs.String("cgroup-parent", "", "cgroup directory under which the run cgroup is made")
	ownerArg := fs.String("owner-pid", "parent", "PID recorded as the run's owner; its guardian tears the run down when it dies (\"parent\": the process that ran us; from a shell that exits at once, pass the supervisor's PID)")
	noGuardian := fs.Bool("no-guardian", false, "start no guardian (the run then lives until 'snakepit kill', or 'snakepit gc' after its owner died)")
	// Limits are the run's (its cgroup's), so they are set here; who a
	// worker runs as and when it is ready are per worker (exec, run).
	if err := sf.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("create: unexpected arguments")
	}
	opid, err := ownerPID(*ownerArg)
	if err != nil {
		return err
	}
	owner, err := record.OwnerOf(opid)
	if err != nil {
		return err
	}
	opts := snakepit.FromSpec(sf.run)
	opts.CgroupParent, opts.Owner = *parent, owner
	// The guardian service watches the owner through a pidfd we pass it.
	opts.NoGuardian, opts.GuardianBinary = *noGuardian, selfBinary()
	r, err := snakepit.Create(ctx, opts)
	if err != nil {
		return err
	}
	reportWarnings(r, stderr)
	noteFallback(r, stderr) // runmode_linux.go
	fmt.Fprintln(stdout, r.ID())
	return nil
}
