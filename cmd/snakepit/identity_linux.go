package main

import (
	"context"
	"io"

	"github.com/snakepit/snakepit/jail"
)

func init() {
	register(&command{
		name:    jail.ExecSubcommand,
		summary: "drop to a worker's identity and exec its command (internal; started by the daemon)",
		raw:     cmdExecAs,
		hidden:  true,
	})
}

// cmdExecAs returns only when the command could not be exec'd.
func cmdExecAs(_ context.Context, args []string, _, _ io.Writer) error {
	return statusError{jail.ExecMain(args)}
}
