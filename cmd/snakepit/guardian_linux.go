package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/snakepit/snakepit/guardian"
)

func init() {
	register(&command{
		name:    guardian.Command,
		summary: "internal: watch an owner and tear down its runs when it dies",
		raw:     cmdGuardian,
		hidden:  true,
	})
}

func cmdGuardian(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := guardian.Main(ctx, args)
	if errors.Is(err, guardian.ErrUsage) {
		return usageError(err.Error())
	}
	return err
}

// selfBinary is this program, which is snakepit: its guardian is itself.
// Empty in a test binary (not snakepit), which then finds one like a
// library user does.
func selfBinary() string {
	if !execAllowed {
		return ""
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// ownerFlag parses --owner-pid for create: "parent" (the default) or a PID.
func ownerPID(v string) (int, error) {
	if v == "" || v == "parent" {
		return os.Getppid(), nil
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, usageError(fmt.Sprintf("--owner-pid %q: want a PID or \"parent\"", v))
	}
	return pid, nil
}
