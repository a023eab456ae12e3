package limits

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/snakepit/snakepit/spec"
)

// ErrControllerUnavailable means a limit needs a cgroup controller that
// the run cgroup cannot get (see ControllerError for why).
var ErrControllerUnavailable = errors.New("cgroup controller unavailable")

// ControllerError says why a cgroup controller is not available to a run.
type ControllerError struct {
	// Controller is "memory", "pids" or "cpu".
	Controller string
	// Needed names the setting that needs it ("--memory-max").
	Needed string
	// Reason is one line of why: bound to a v1 hierarchy, not delegated,
	// not enabled in the parent, ...
	Reason string
}

func (e *ControllerError) Error() string {
	s := "cgroup controller " + e.Controller + " unavailable"
	if e.Needed != "" {
		s += " (needed for " + e.Needed + ")"
	}
	return s + ": " + e.Reason
}

// Unwrap returns ErrControllerUnavailable.
func (e *ControllerError) Unwrap() error { return ErrControllerUnavailable }

// EventKind names a limit event of a run.
type EventKind string

// Limit events, read from the run cgroup's memory.events and pids.events.
const (
	// EventOOMKill: the OOM killer killed processes of the run
	// (memory.events oom_kill; Count is the number of processes).
	EventOOMKill EventKind = "oom_kill"
	// EventOOMGroupKill: a whole-run OOM kill happened (memory.events
	// oom_group_kill, Linux >= 6.0).
	EventOOMGroupKill EventKind = "oom_group_kill"
	// EventPidsMax: forks were refused at pids.max (pids.events max).
	EventPidsMax EventKind = "pids_max"
)

// Event is a limit event of a run, reported to the callback given to
// Watch.
type Event struct {
	RunID string    `json:"run_id"`
	Kind  EventKind `json:"kind"`
	// Count is the increase since the previous report; Total the counter.
	Count uint64    `json:"count"`
	Total uint64    `json:"total"`
	Time  time.Time `json:"time"`
	// Limit is the limit's current value as in its file ("33554432").
	Limit string `json:"limit,omitempty"`
}

func (e Event) String() string {
	switch e.Kind {
	case EventOOMKill:
		if e.Limit == "max" {
			// The run has no memory.max of its own: an enclosing cgroup's
			// limit (a unit's MemoryMax=) or the host ran out.
			return fmt.Sprintf("run %s: out of memory: the kernel killed %d process(es) (the run has no memory.max: a limit above it, such as its unit's MemoryMax=, or the host's memory)", e.RunID, e.Count)
		}
		return fmt.Sprintf("run %s: out of memory: the kernel killed %d process(es) (memory.max %s)", e.RunID, e.Count, e.limitText())
	case EventOOMGroupKill:
		return fmt.Sprintf("run %s: out of memory: whole-run OOM kill (memory.oom.group)", e.RunID)
	case EventPidsMax:
		return fmt.Sprintf("run %s: pids.max (%s) reached: %d fork(s) refused", e.RunID, e.limitText(), e.Count)
	}
	return fmt.Sprintf("run %s: %s +%d (total %d)", e.RunID, e.Kind, e.Count, e.Total)
}

func (e Event) limitText() string {
	if n, err := strconv.ParseInt(e.Limit, 10, 64); err == nil && n > 0 {
		return formatLimit(e.Kind, n)
	}
	if e.Limit == "" {
		return "?"
	}
	return e.Limit
}

// formatLimit formats n as a size for memory events, as a count otherwise.
func formatLimit(k EventKind, n int64) string {
	if k == EventOOMKill || k == EventOOMGroupKill {
		return spec.FormatBytes(n)
	}
	return strconv.FormatInt(n, 10)
}

// Stats are a run's resource usage. A nil field is not available on this
// host (its controller is not enabled for the run).
type Stats struct {
	// MemoryCurrent is memory.current in bytes.
	MemoryCurrent *uint64 `json:"memory_current,omitempty"`
	// MemoryPeak is memory.peak in bytes (Linux >= 5.19).
	MemoryPeak *uint64 `json:"memory_peak,omitempty"`
	// PidsCurrent is pids.current.
	PidsCurrent *uint64 `json:"pids_current,omitempty"`
	// CPUUsageUsec is cpu.stat usage_usec (cgroup core; always there on
	// cgroup2).
	CPUUsageUsec *uint64 `json:"cpu_usage_usec,omitempty"`
	// CPUThrottled is cpu.stat nr_throttled and CPUThrottledUsec
	// throttled_usec (cpu controller only).
	CPUThrottled     *uint64 `json:"cpu_nr_throttled,omitempty"`
	CPUThrottledUsec *uint64 `json:"cpu_throttled_usec,omitempty"`
	// OOMKills is memory.events oom_kill; PidsMaxEvents pids.events max.
	OOMKills      *uint64 `json:"oom_kills,omitempty"`
	PidsMaxEvents *uint64 `json:"pids_max_events,omitempty"`
}
