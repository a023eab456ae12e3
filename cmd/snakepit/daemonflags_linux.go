package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
)

// daemonFlags are the flags of `snakepit daemon`, in both builds: the lean
// one parses them too (help, completion, the man page, usage errors
// without an exec) and hands the arguments to snakepitd.
type daemonFlags struct {
	socket, group, parent string
	metricsGroup          string
	socketMode            uint64
	grace                 time.Duration
	noScope, noGuardian   bool
	maxRuns, maxWorkers   int
	printUnit, debug      bool
}

// runDaemon runs the daemon (daemon_linux.go) or execs snakepitd with the
// arguments as given (daemonexec_linux.go).
var runDaemon func(ctx context.Context, f *daemonFlags, raw []string, stdout, stderr io.Writer) error

func init() {
	register(&command{
		name:     "daemon",
		summary:  "run the host daemon: owns many runs, serves the local API on a unix socket (the lean build execs snakepitd)",
		synopsis: "[OPTION]...",
		exits:    []int{exitPermission, exitFailure},
		define: func(fs *flagSet) action {
			f := &daemonFlags{socket: api.DefaultSocket, grace: snakepit.DefaultGrace}
			fs.String("socket", 0, "PATH", "unix socket of the local API", &f.socket).Def(api.DefaultSocket).Comp("file")
			fs.String("group", 0, "GROUP", "group (name or GID) whose members may create runs and manage their own (default: root only)", &f.group).Comp("group")
			fs.String("metrics-group", 0, "GROUP", "group (name or GID) whose members may read GET /metrics (root always may)", &f.metricsGroup).Comp("group")
			fs.Func("socket-mode", 0, "MODE", "octal mode of the socket file (default 0600, 0660 with --group)", func(s string) error {
				m, err := strconv.ParseUint(s, 8, 32)
				if err != nil || m > 0o777 {
					return fmt.Errorf("not an octal mode like 0660")
				}
				f.socketMode = m
				return nil
			})
			fs.Duration("grace", 0, "SIGTERM-to-SIGKILL time of teardowns, and of every run at shutdown", &f.grace)
			fs.String("cgroup-parent", 0, "DIR", "create runs under this cgroup directory (default: delegated cgroup or transient scope under systemd, else <cgroup2>/snakepit)", &f.parent).Comp("dir")
			fs.Bool("no-scope", 0, "never ask systemd for a transient scope; without delegation use <cgroup2>/snakepit", &f.noScope)
			fs.Bool("no-guardian", 0, "do not start a guardian (runs then survive a SIGKILLed daemon until gc)", &f.noGuardian)
			fs.Int("max-runs", 0, "N", "refuse to create runs beyond this many per UID (default 4096)", &f.maxRuns)
			fs.Int("max-workers", 0, "N", "refuse to start workers beyond this many running per UID (default 1024)", &f.maxWorkers)
			fs.Bool("print-unit", 0, "print the systemd unit file and exit", &f.printUnit)
			fs.Bool("debug", 0, "log at debug level", &f.debug)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("daemon: unexpected arguments")
				}
				return runDaemon(ctx, f, fs.raw, stdout, stderr)
			}
		},
	})
}
