package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"sort"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// Exit statuses of snakepit's own failures. A wrapped command's own status
// passes through unchanged, so these sit above the range programs commonly
// use, below the 126/127 of shells and 128+N of signals; 124-127 are those
// of timeout(1).
const (
	exitUsage      = 2
	exitNoKill     = 117
	exitUnknownRun = 118
	exitNotReady   = 119
	exitInvalidID  = 120
	exitIDInUse    = 121
	exitPermission = 122 // permission denied: cgroupfs, files, processes, the daemon (403)
	exitNoCgroup2  = 123
	exitTimeout    = 124 // run --timeout: the command ran too long
	exitFailure    = 125
	exitCannotExec = 126
	exitNotFound   = 127
)

// exitTable is the one table of exit statuses: every command's help and
// the man page list theirs from it.
var exitTable = map[int]string{
	exitUsage:      "usage error: a bad option or value, contradictory options, an unknown --user or --group",
	exitNoKill:     "neither cgroup.kill nor cgroup.freeze (Linux < 5.2)",
	exitUnknownRun: "no such run",
	exitNotReady:   "the command was not ready within --ready-timeout",
	exitInvalidID:  "invalid run ID (7 characters of [0-9a-z])",
	exitIDInUse:    "run ID already in use",
	exitPermission: "permission denied: cgroupfs, a record or lock file, a process, or the daemon",
	exitNoCgroup2:  "no cgroup2 filesystem mounted",
	exitTimeout:    "the command ran longer than --timeout; the run was torn down",
	exitFailure:    "other snakepit failure",
	exitCannotExec: "the command cannot be executed",
	exitNotFound:   "the command was not found",
}

func exitMeaning(code int) string {
	if m, ok := exitTable[code]; ok {
		return m
	}
	panic(fmt.Sprintf("exit status %d is not in exitTable", code))
}

// statusError carries a wrapped command's exit status: not a failure of
// snakepit, nothing is printed.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usageError(msg string) error { return usageErr{msg} }

// codedError is an error with a chosen exit status.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// startError marks an error from starting the user's command (lookup,
// exec): only there do ENOENT and EACCES mean 127 and 126 as in shells. The
// same errnos from snakepit's own files are ordinary failures.
type startError struct{ err error }

func (e startError) Error() string { return e.err.Error() }
func (e startError) Unwrap() error { return e.err }

// commandStartError marks err as a startError when it came from finding or
// executing the command (os/exec's *exec.Error, the child's "fork/exec"
// *fs.PathError); anything else from a start (the network namespace,
// readiness, the run cgroup) is snakepit's own failure.
func commandStartError(err error) error {
	var pe *fs.PathError
	if _, ok := errors.AsType[*exec.Error](err); ok || errors.As(err, &pe) && pe.Op == "fork/exec" {
		return startError{err}
	}
	return err
}

// sharedCode is the exit status of errs when they all map to the same one,
// else exitFailure: a command that failed on several runs for one reason
// (permission) says so.
func sharedCode(errs []error) int {
	code := exitCode(errs[0])
	for _, err := range errs[1:] {
		if exitCode(err) != code {
			return exitFailure
		}
	}
	return code
}

// report prints err as one line and maps it to an exit status.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var se statusError
	if errors.As(err, &se) {
		return se.code
	}
	code := exitCode(err)
	var ui usageIn
	if code != exitUsage || !errors.As(err, &ui) {
		fmt.Fprintf(stderr, "snakepit: %v\n", err)
		return code
	}
	// One line as every error (the "snakepit: " prefix is what the Elixir
	// side reads as ours), then where the right form is.
	fmt.Fprintf(stderr, "snakepit: %v\n%s\n", err, ui.tryHelp())
	return code
}

func exitCode(err error) int {
	var ue usageErr
	var ce codedError
	var se startError
	var spe specError
	var fe *flagError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, runid.ErrInvalid):
		return exitInvalidID
	case errors.As(err, &spe), errors.As(err, &fe):
		return exitUsage
	case errors.As(err, &ue), errors.Is(err, snakepit.ErrBadParent), errors.Is(err, snakepit.ErrUnknownUser):
		return exitUsage
	case errors.Is(err, runid.ErrInvalid):
		return exitInvalidID
	case errors.Is(err, cgroup.ErrExists):
		return exitIDInUse
	case errors.Is(err, cgroup.ErrPermission):
		return exitPermission
	case errors.Is(err, cgroup.ErrNoCgroup2):
		return exitNoCgroup2
	case errors.Is(err, cgroup.ErrNoKill):
		return exitNoKill
	case errors.As(err, &se) && (errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)):
		return exitNotFound
	case errors.As(err, &se) && errors.Is(err, fs.ErrPermission):
		return exitCannotExec
	case errors.Is(err, fs.ErrPermission): // the daemon's 403 (client.ErrForbidden) too
		// One status for "not allowed" whichever command met it: the
		// cgroupfs, a record or lock file, a process, the daemon's 403.
		return exitPermission
	}
	return exitFailure
}

func sortedCommands() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// specError is a bad setting: exit status 2 unless its sentinel has a
// status of its own (an invalid run ID).
type specError struct{ fe *spec.FieldError }

func (e specError) Error() string { return e.fe.FlagError() }
func (e specError) Unwrap() error { return e.fe }
