package main

import (
	"context"
	"io"

	"github.com/snakepit/snakepit/pidns"
)

func init() {
	register(&command{
		name:    pidns.Subcommand,
		summary: "minimal init of a run's PID namespace (internal; started by --pid-ns)",
		raw:     cmdInit,
		hidden:  true,
	})
}

// cmdInit runs the PID-namespace init. Its exit status is the wrapped
// command's, passed through like snakepit run's.
func cmdInit(_ context.Context, args []string, _, _ io.Writer) error {
	if code := pidns.Main(args); code != 0 {
		return statusError{code}
	}
	return nil
}
