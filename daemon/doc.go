// Package daemon is the snakepit host daemon: one root process that owns
// many runs on behalf of local clients and serves the HTTP+JSON API of
// package api on a unix socket.
//
// At start it chooses where runs live (a --cgroup-parent; else, under
// systemd, its own delegated service cgroup or a transient scope with
// Delegate=yes that it asks systemd for, moving itself into the leaf
// "supervisor/" either way; else <cgroup2>/snakepit), becomes the child
// subreaper and the process's single wait4(-1) owner, removes the stale runs
// of a previous instance, starts a guardian that tears its runs down should
// it be SIGKILLed, and tells systemd READY=1. On SIGTERM (ctx cancelled) it
// tears every run down with escalation and exits cleanly.
//
// Access control uses the peer credentials of each connection
// (SO_PEERCRED, SO_PEERGROUPS): root may do anything; members of the
// configured group may create runs and manage the runs their UID created,
// and their workers run with their UID, GID and groups; everyone else gets
// 403. The socket's owner and mode enforce the same at connect time.
package daemon

import (
	"errors"
	"io/fs"
	"log/slog"
	"time"
)

// Sentinel errors.
var (
	// ErrRunning means another daemon already answers on the socket.
	ErrRunning = errors.New("a snakepit daemon is already listening on the socket")
	// ErrBadConfig means a Config value is unusable (a relative or too
	// long socket path, an unknown group); the CLI exits 2 on it.
	ErrBadConfig = errors.New("bad daemon configuration")
	// ErrUnsupported is returned on platforms other than Linux.
	ErrUnsupported = errors.New("daemon: only supported on Linux")
)

// Layout modes, as reported in api.Status.Mode.
const (
	ModeConfigured = "configured"
	ModeDelegated  = "delegated"
	ModeScope      = "scope"
	ModeDefault    = "default"
)

// Config configures a daemon. The zero value is usable (as root).
type Config struct {
	// Socket is the unix socket path; empty means api.DefaultSocket.
	Socket string
	// SocketMode is the socket file's mode; zero means 0600, or 0660 when
	// a group is set. Tests widen it to check the in-daemon access control.
	SocketMode fs.FileMode
	// Group names the group whose members may use the API; empty allows
	// root only. GroupID, when > 0, is used instead of looking Group up.
	Group   string
	GroupID int
	// MetricsGroup names a group whose members may read GET /metrics
	// (root always may); MetricsGroupID, when > 0, is used instead.
	MetricsGroup   string
	MetricsGroupID int
	// Grace is the SIGTERM-to-SIGKILL time of a teardown without ?grace=,
	// and of every run at shutdown. Zero means snakepit.DefaultGrace.
	Grace time.Duration
	// MaxGrace bounds ?grace=; zero means 5 minutes.
	MaxGrace time.Duration
	// CgroupParent forces where runs are created (no systemd scope, no
	// move into a leaf).
	CgroupParent string
	// NoScope forbids asking systemd for a transient scope: without a
	// delegated cgroup the daemon then uses <cgroup2>/snakepit.
	NoScope bool
	// ParentsFile, if set, is where the run parent is recorded for other
	// processes (inventory.DaemonParentsFile for the host daemon).
	ParentsFile string
	// NoGuardian disables the guardian process.
	NoGuardian bool
	// GuardianBinary is the snakepit executable the guardian runs; empty
	// means our own executable.
	GuardianBinary string
	// MaxRuns and MaxWorkers bound the number of runs and of workers per
	// run; zero means 4096 and 1024.
	MaxRuns, MaxWorkers int
	// Logger receives the daemon's log; nil discards it. NewLogger makes
	// the daemon's own (the journal under systemd).
	Logger *slog.Logger
	// OnReady, if set, is called once startup is complete.
	OnReady func(Info)
}

// Info describes a started daemon.
type Info struct {
	Socket    string
	RunParent string
	Mode      string
	// StaleRunsRemoved counts the previous instance's runs removed at start.
	StaleRunsRemoved int
	GuardianPID      int
}
