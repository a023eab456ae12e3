// Command snakepit is a cgroup-v2 process jailer: it runs commands in a
// per-run cgroup so that nothing they start outlives the run.
//
// The main function is thin: everything happens in run, which tests call
// directly.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	execAllowed = true
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(report(err, os.Stderr))
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	hidden  bool
}

// commands is filled by init functions in the files of each subcommand.
var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

// beforeDispatch, if set, runs before a command; it may replace the process
// (the default build hands daemon-related commands to snakepitd).
var beforeDispatch func(name string, args []string) error

// execAllowed is true only in the real process (main), never when tests
// call run directly: a test process must not be replaced by exec, and it
// goes on after a command returns, so what the command set up process-wide
// (signal handlers) must be undone there, not only skipped.
var execAllowed bool

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return usageError("no command given")
		}
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	if beforeDispatch != nil {
		if err := beforeDispatch(args[0], args[1:]); err != nil {
			return err
		}
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: snakepit COMMAND [FLAGS] [-- CMD ARGS...]")
	fmt.Fprintln(w, "\ncommands:")
	for _, name := range sortedCommands() {
		if c := commands[name]; !c.hidden {
			fmt.Fprintf(w, "  %-8s %s\n", name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nRun 'snakepit COMMAND -h' for the flags of a command.")
}
