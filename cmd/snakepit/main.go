// Command snakepit is a cgroup-v2 process jailer: it runs commands in a
// per-run cgroup so that nothing they start outlives the run.
//
// The main function is thin: everything happens in run, which tests call
// directly.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	execAllowed = true
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(report(err, os.Stderr))
}

// beforeDispatch, if set, runs before a command; it may replace the process
// (the default build hands daemon-related commands to snakepitd).
var beforeDispatch func(name string, args []string) error

// execAllowed is true only in the real process (main), never when tests
// call run directly: a test process must not be replaced by exec, and it
// goes on after a command returns, so what the command set up process-wide
// (signal handlers) must be undone there, not only skipped.
var execAllowed bool

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageIn{"", usageError("no command given")}
	}
	switch args[0] {
	case "-h", "--help":
		topUsage(stdout)
		return nil
	case "-v", "--version", "-version":
		args = append([]string{"version"}, args[1:]...)
	}
	c, ok := commands[args[0]]
	if !ok {
		if len(args[0]) > 1 && args[0][0] == '-' {
			return usageIn{"", usageError(fmt.Sprintf("unknown option '%s'", args[0]))}
		}
		return usageIn{"", usageError(fmt.Sprintf("unknown command %q", args[0]))}
	}
	if c.raw != nil {
		return c.raw(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet(c)
	act := c.define(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, errHelp) {
			writeHelp(stdout, c)
			return nil
		}
		return inCommand(c, err)
	}
	if beforeDispatch != nil {
		if err := beforeDispatch(c.name, args[1:]); err != nil {
			return err
		}
	}
	return inCommand(c, act(ctx, fs.Args(), stdout, stderr))
}

// inCommand marks a usage error with its command, for the line that
// points to the command's help.
func inCommand(c *command, err error) error {
	if err != nil && exitCode(err) == exitUsage {
		return usageIn{c.name, err}
	}
	return err
}
