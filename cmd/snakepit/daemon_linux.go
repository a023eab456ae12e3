//go:build snakepitd

package main

import (
	"context"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/daemon"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/systemd"
)

func init() {
	register("daemon", command{
		summary: "run the host daemon: owns many runs, serves the local API on a unix socket",
		run:     cmdDaemon,
	})
}

func cmdDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("daemon", "[flags]", stderr)
	socket := fs.String("socket", api.DefaultSocket, "unix socket of the local API")
	group := fs.String("group", "", "group (name or GID) whose members may create runs and manage their own (default: root only)")
	metricsGroup := fs.String("metrics-group", "", "group (name or GID) whose members may read GET /metrics (root always may)")
	socketMode := fs.String("socket-mode", "", "octal mode of the socket file (default 0600, 0660 with --group)")
	grace := fs.Duration("grace", snakepit.DefaultGrace, "SIGTERM-to-SIGKILL time of teardowns, and of every run at shutdown")
	parent := fs.String("cgroup-parent", "", "create runs under this cgroup directory (default: delegated cgroup or transient scope under systemd, else <cgroup2>/snakepit)")
	noScope := fs.Bool("no-scope", false, "never ask systemd for a transient scope; without delegation use <cgroup2>/snakepit")
	noGuardian := fs.Bool("no-guardian", false, "do not start a guardian (runs then survive a SIGKILLed daemon until gc)")
	maxRuns := fs.Int("max-runs", 0, "refuse to create runs beyond this many per UID (default 4096)")
	maxWorkers := fs.Int("max-workers", 0, "refuse to start workers beyond this many running per UID (default 1024)")
	printUnit := fs.Bool("print-unit", false, "print the systemd unit file and exit")
	debug := fs.Bool("debug", false, "log at debug level")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("daemon: unexpected arguments")
	}
	if *maxRuns < 0 || *maxWorkers < 0 {
		return usageError("daemon: --max-runs and --max-workers take a positive count")
	}
	if *printUnit {
		_, err := io.WriteString(stdout, systemd.Unit)
		return err
	}
	var mode uint64
	if *socketMode != "" {
		m, err := strconv.ParseUint(*socketMode, 8, 32)
		if err != nil || m > 0o777 {
			return usageError(fmt.Sprintf("daemon: --socket-mode %q: want an octal mode like 0660", *socketMode))
		}
		mode = m
	}
	if os.Geteuid() != 0 {
		return codedError{exitPermission, fmt.Errorf("daemon must run as root (euid %d)", os.Geteuid())}
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	cfg := daemon.Config{
		Socket:       *socket,
		SocketMode:   iofs.FileMode(mode),
		Group:        *group,
		MetricsGroup: *metricsGroup,
		Grace:        *grace,
		CgroupParent: *parent,
		NoScope:      *noScope,
		NoGuardian:   *noGuardian,
		MaxRuns:      *maxRuns,
		MaxWorkers:   *maxWorkers,
		Logger:       daemon.NewLogger(stderr, level), // the journal under systemd, else text on stderr
	}
	if *socket == api.DefaultSocket {
		// Only the host daemon tells other processes where its runs are.
		cfg.ParentsFile = inventory.DaemonParentsFile
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP)
	return daemon.Run(ctx, cfg)
}
