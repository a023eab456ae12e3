package main

import (
	"context"
	"fmt"
	"io"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spec"
)

func init() {
	register(&command{
		name:         "create",
		summary:      "create an empty run and print its ID (join it with 'snakepit exec')",
		synopsis:     "[OPTION]...",
		exits:        []int{exitInvalidID, exitIDInUse, exitPermission, exitNoCgroup2, exitNoKill, exitFailure},
		interspersed: true,
		define: func(fs *flagSet) action {
			var f createFlags
			// Limits are the run's (its cgroup's), so they are set here;
			// who a worker runs as and when it is ready are per worker
			// (exec, run).
			f.addRunFlags(fs, spec.Duration(snakepit.DefaultGrace), false)
			fs.String("cgroup-parent", 0, "DIR", "cgroup directory under which the run cgroup is made (default: as for run)", &f.parent).Comp("dir")
			f.placement.define(fs)
			f.owner = "parent"
			fs.String("owner-pid", 0, "PID", "PID recorded as the run's owner; its guardian tears the run down when it dies (\"parent\": the process that ran us; from a shell that exits at once, pass the supervisor's PID)", &f.owner).Def("parent")
			fs.Bool("no-guardian", 0, "start no guardian (the run then lives until 'snakepit kill', or 'snakepit gc' after its owner died)", &f.noGuardian)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("create: unexpected arguments")
				}
				if err := f.check(fs); err != nil {
					return err
				}
				if err := f.placement.check(fs); err != nil {
					return err
				}
				return cmdCreate(ctx, &f, stdout, stderr)
			}
		},
	})
}

type createFlags struct {
	specFlags
	parent, owner string
	noGuardian    bool
	placement     placementFlags
}

func cmdCreate(ctx context.Context, f *createFlags, stdout, stderr io.Writer) error {
	sf, parent, noGuardian := &f.specFlags, &f.parent, &f.noGuardian
	opid, err := ownerPID(f.owner)
	if err != nil {
		return err
	}
	owner, err := record.OwnerOf(opid)
	if err != nil {
		return err
	}
	opts := snakepit.FromSpec(sf.run)
	opts.CgroupParent, opts.Owner = *parent, owner
	f.placement.apply(&opts)
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
