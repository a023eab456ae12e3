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
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("create: unexpected arguments")
	}
	r, err := snakepit.Create(ctx, snakepit.Options{ID: *id, CgroupParent: *parent})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, r.ID())
	return nil
}
