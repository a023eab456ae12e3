//go:build !snakepitd

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/snakepit/snakepit/api"
)

// The default build of snakepit leaves out the daemon, its HTTP API client
// and D-Bus: their packages' initialisers would run in every snakepit
// process (each `snakepit run` wrapper, each guardian) and cost more than
// starting the wrapped command. `go build -tags snakepitd` builds the full
// binary, snakepitd. Here `daemon` execs it, and so do `ps` and `kill`
// when a daemon's socket exists, so that they see and act on its runs.

// FullBinaryEnv names the full binary explicitly.
const FullBinaryEnv = "SNAKEPITD"

// errNoFull means the full binary could not be found.
var errNoFull = errors.New("snakepitd (the snakepit build with the daemon: go build -tags snakepitd -o snakepitd ./cmd/snakepit) not found next to snakepit, in $SNAKEPITD or on PATH")

func init() {
	runDaemon = func(ctx context.Context, _ *daemonFlags, raw []string, stdout, stderr io.Writer) error {
		return execFull("daemon", raw)
	}
	beforeDispatch = func(name string, args []string) error {
		if (name == "ps" || name == "kill") && daemonSocket() {
			if err := execFull(name, args); !errors.Is(err, errNoFull) {
				return err
			}
		}
		return nil // act locally
	}
}

func daemonSocket() bool {
	p := os.Getenv(api.SocketEnv)
	if p == "" {
		p = api.DefaultSocket
	}
	st, err := os.Stat(p)
	return err == nil && st.Mode()&fs.ModeSocket != 0
}

// fullBinary finds snakepitd: $SNAKEPITD, next to our own executable, or
// on PATH.
func fullBinary() (string, error) {
	if p := os.Getenv(FullBinaryEnv); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "snakepitd")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("snakepitd"); err == nil {
		return p, nil
	}
	return "", errNoFull
}

// execFull replaces this process with snakepitd NAME ARGS... (same PID, so
// a Type=notify unit's main process stays the same).
func execFull(name string, args []string) error {
	if !execAllowed {
		return fmt.Errorf("%s: %w (not exec'd from within a test)", name, errNoFull)
	}
	p, err := fullBinary()
	if err != nil {
		return err
	}
	argv := append([]string{p, name}, args...)
	if err := syscall.Exec(p, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", p, err)
	}
	return nil
}
