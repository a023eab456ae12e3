//go:build snakepitd

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/daemon"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/systemd"
)

func init() { runDaemon = cmdDaemon }

func cmdDaemon(ctx context.Context, f *daemonFlags, _ []string, stdout, stderr io.Writer) error {
	if f.printUnit {
		_, err := io.WriteString(stdout, systemd.Unit)
		return err
	}
	if os.Geteuid() != 0 {
		return codedError{exitPermission, fmt.Errorf("daemon must run as root (euid %d)", os.Geteuid())}
	}
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	cfg := daemon.Config{
		Socket:       f.socket,
		SocketMode:   iofs.FileMode(f.socketMode),
		Group:        f.group,
		MetricsGroup: f.metricsGroup,
		Grace:        f.grace,
		CgroupParent: f.parent,
		NoScope:      f.noScope,
		NoGuardian:   f.noGuardian,
		MaxRuns:      f.maxRuns,
		MaxWorkers:   f.maxWorkers,
		Logger:       daemon.NewLogger(stderr, level), // the journal under systemd, else text on stderr
	}
	if f.socket == api.DefaultSocket {
		// Only the host daemon tells other processes where its runs are.
		cfg.ParentsFile = inventory.DaemonParentsFile
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP)
	err := daemon.Run(ctx, cfg)
	if errors.Is(err, daemon.ErrBadConfig) {
		return codedError{exitUsage, err}
	}
	return err
}
