// Package api defines the wire format of the snakepit daemon's local HTTP+JSON
// API (version 1), shared by the daemon and the Go client. docs/API.md
// documents it with curl examples.
//
// Request bodies are decoded strictly (unknown fields are an error), so new
// settings are added as new optional fields whose zero value keeps the old
// behaviour.
package api

import (
	"time"

	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/spec"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/snakepit/snakepit.sock"

// SocketEnv overrides DefaultSocket for clients (the snakepit CLI).
const SocketEnv = "SNAKEPIT_SOCKET"

// Paths of the API.
const (
	PathRuns   = "/v1/runs"
	PathEvents = "/v1/events"
	PathStatus = "/v1/status"
	// PathMetrics is the Prometheus exposition of the daemon's metrics
	// (root and members of --metrics-group).
	PathMetrics = "/metrics"
)

// CreateRunRequest is the body of POST /v1/runs: the run spec, the same
// description the CLI's flags and the Go library take (package spec).
type CreateRunRequest = spec.Run

// StartWorkerRequest is the body of POST /v1/runs/{id}/workers: the worker
// spec. Through the daemon, env omitted means only PATH, dir omitted "/",
// and dir, stdout and stderr must be absolute; stdout and stderr are opened
// for appending (created 0644) as the caller.
type StartWorkerRequest = spec.Worker

// Exit is how a worker ended.
type Exit struct {
	// Code is the exit code, or 128+N when killed by signal N.
	Code int `json:"code"`
	// Signal is the number of the signal that killed it, or 0.
	Signal int `json:"signal,omitempty"`
	// SignalName is e.g. "SIGKILL" when Signal is set.
	SignalName string `json:"signal_name,omitempty"`
}

// Worker states.
const (
	WorkerRunning = "running"
	WorkerExited  = "exited"
)

// Worker is one process started through the API.
type Worker struct {
	// ID is the worker's number within its run, from 1.
	ID      int       `json:"id"`
	PID     int       `json:"pid"`
	Argv    []string  `json:"argv,omitempty"`
	State   string    `json:"state"`
	Started time.Time `json:"started"`
	// Placement says how the worker was put into the run cgroup
	// ("clone3" or "pre-exec").
	Placement string `json:"placement,omitempty"`
	// Exit is set once the worker has exited.
	Exit *Exit `json:"exit,omitempty"`
	// Ready is what the worker reported when it became ready (a worker
	// started with "ready").
	Ready *spec.ReadyInfo `json:"ready,omitempty"`
}

// Run states.
const (
	RunActive   = "active"
	RunStopping = "stopping"
)

// Run is a run owned by the daemon.
type Run struct {
	ID      string    `json:"id"`
	State   string    `json:"state"`
	Owner   int       `json:"owner_uid"`
	Cgroup  string    `json:"cgroup"`
	Created time.Time `json:"created"`
	Workers []Worker  `json:"workers"`
	// Warnings are the limits left out under best_effort_limits.
	Warnings []string `json:"warnings,omitempty"`
}

// RunStats is the body of GET /v1/runs/{id}/stats: the run cgroup's usage,
// the same stats object as each run of `snakepit ps --json`.
type RunStats struct {
	ID    string       `json:"id"`
	Stats limits.Stats `json:"stats"`
}

// Teardown is the result of DELETE /v1/runs/{id}.
type Teardown struct {
	ID string `json:"id"`
	// Terminated is how many processes got SIGTERM.
	Terminated int `json:"terminated"`
	// Killed is true when the grace period ran out and the rest was
	// killed.
	Killed        bool   `json:"killed"`
	KillMechanism string `json:"kill_mechanism,omitempty"`
	// DurationMS is how long the teardown took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Escaped counts workers still alive once the run cgroup was gone (a
	// root worker that moved itself out): each was SIGKILLed through its
	// pidfd. A run with pid_ns holds such workers in its namespace too.
	Escaped int `json:"escaped,omitempty"`
	// Error is set when the cgroup could not be removed.
	Error string `json:"error,omitempty"`
}

// Event types of GET /v1/events.
const (
	EventRunCreated    = "run_created"
	EventWorkerStarted = "worker_started"
	EventWorkerExited  = "worker_exited"
	EventRunTornDown   = "run_torn_down"
	// Limit events of a run, as `snakepit run` reports them on stderr:
	// the OOM killer killed Count processes (memory.events oom_kill); a
	// whole-run OOM kill (oom_group_kill, memory.oom.group); Count forks
	// were refused at pids.max (pids.events max). Reports of one kind are
	// at least a second apart; Count adds up what happened in between.
	EventOOMKill      = "oom_kill"
	EventOOMGroupKill = "oom_group_kill"
	EventPidsMax      = "pids_max"
	// EventOverflow is the last event of a stream whose reader fell too far
	// behind; the daemon closes the stream after it.
	EventOverflow = "overflow"
)

// Event is one line of GET /v1/events.
type Event struct {
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	Run      string    `json:"run,omitempty"`
	Worker   int       `json:"worker,omitempty"`
	PID      int       `json:"pid,omitempty"`
	Exit     *Exit     `json:"exit,omitempty"`
	Teardown *Teardown `json:"teardown,omitempty"`
	// Limit events: Count is the increase since the previous report,
	// Total the cgroup's counter, Limit the limit's value as in its file
	// ("50331648", "max"), Message the line `snakepit run` prints.
	Count   uint64 `json:"count,omitempty"`
	Total   uint64 `json:"total,omitempty"`
	Limit   string `json:"limit,omitempty"`
	Message string `json:"message,omitempty"`
}

// Status is the body of GET /v1/status.
type Status struct {
	PID     int `json:"pid"`
	Runs    int `json:"runs"`
	Workers int `json:"workers"`
	// StaleRunsRemoved is how many runs of a previous instance were
	// removed at startup.
	StaleRunsRemoved int `json:"stale_runs_removed"`
	// RunParent is the cgroup under which runs are created.
	RunParent string `json:"run_parent"`
	// Mode says how RunParent was chosen: "delegated" (our service's
	// cgroup), "scope" (a transient scope we asked systemd for),
	// "default" (no systemd) or "configured".
	Mode       string `json:"mode"`
	Goroutines int    `json:"goroutines"`
	OpenFDs    int    `json:"open_fds"`
	RSSBytes   int64  `json:"rss_bytes"`
	// Guardian is the PID of the guardian process, or 0.
	Guardian int `json:"guardian,omitempty"`
	// EventStreams is the number of open GET /v1/events streams.
	EventStreams int `json:"event_streams"`
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	// Code is a stable machine-readable reason, e.g. "invalid_run_id".
	Code string `json:"code"`
}

// Error codes.
const (
	CodeBadRequest   = "bad_request"
	CodeInvalidJSON  = "invalid_json"
	CodeInvalidRunID = "invalid_run_id"
	CodeNoProgram    = "no_program"
	CodeTooLarge     = "too_large"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeMethod       = "method_not_allowed"
	CodeUnavailable  = "unavailable"
	CodeLimit        = "limit_reached"
	CodeInternal     = "internal"

	// Codes of a rejected spec: the same sentinel errors as the CLI's
	// (package spec, jail, limits), one code each.
	CodeInvalidLimit          = "invalid_limit"
	CodeInvalidNet            = "invalid_net"
	CodeNoSuchNetns           = "no_such_netns"
	CodeInvalidDuration       = "invalid_duration"
	CodeInvalidReady          = "invalid_ready"
	CodeUnknownUser           = "unknown_user"
	CodeControllerUnavailable = "controller_unavailable"
	CodeNotReady              = "not_ready"
	CodeExitedBeforeReady     = "exited_before_ready"
)
