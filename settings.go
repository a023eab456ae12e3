package snakepit

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Jail settings: the platform-neutral types of a run's resource limits,
// network, credentials and readiness, with JSON tags so that the daemon's
// API can embed them unchanged. The Linux implementation is in
// limits_linux.go, netns_linux.go, cred_linux.go and ready_linux.go.

// Sentinel errors of the jail settings.
var (
	// ErrControllerUnavailable means a limit needs a cgroup controller that
	// the run cgroup cannot get (see ControllerError for why).
	ErrControllerUnavailable = errors.New("cgroup controller unavailable")
	// ErrBadLimit means a limit value could not be parsed or is out of
	// range.
	ErrBadLimit = errors.New("invalid limit")
	// ErrBadNetns means a --net value or namespace name is invalid.
	ErrBadNetns = errors.New("invalid network namespace")
	// ErrNoNetns means a named network namespace does not exist.
	ErrNoNetns = errors.New("no such network namespace")
	// ErrUnknownUser means a user or group is not in the user database and
	// is not numeric.
	ErrUnknownUser = errors.New("unknown user or group")
	// ErrNotReady means a worker did not become ready within its
	// readiness timeout.
	ErrNotReady = errors.New("worker not ready in time")
	// ErrExitedBeforeReady means a worker exited before it became ready.
	ErrExitedBeforeReady = errors.New("worker exited before it was ready")
)

// LimitMax, as a memory or pids limit, writes "max" (no limit) explicitly;
// zero leaves the file alone.
const LimitMax = -1

// Limits are a run's resource limits, written to its cgroup (the cgroup v2
// interface files named in the comments). The zero value sets nothing.
type Limits struct {
	// MemoryMax is memory.max in bytes: the hard limit; the OOM killer acts
	// above it. 0 leaves it alone, LimitMax writes "max".
	MemoryMax int64 `json:"memory_max,omitempty"`
	// MemoryHigh is memory.high in bytes: the throttling limit.
	MemoryHigh int64 `json:"memory_high,omitempty"`
	// PidsMax is pids.max: how many processes and threads the run may have.
	PidsMax int64 `json:"pids_max,omitempty"`
	// CPUMax is cpu.max: at most Quota microseconds of CPU time per Period.
	CPUMax CPUMax `json:"cpu_max,omitzero"`
	// CPUWeight is cpu.weight (1-10000, default 100).
	CPUWeight uint64 `json:"cpu_weight,omitempty"`
	// OOMGroup is memory.oom.group: when the OOM killer picks a process of
	// the run it kills the whole run (systemd's OOMPolicy=kill). nil means
	// on wherever the memory controller is available to the run.
	OOMGroup *bool `json:"oom_group,omitempty"`
	// BestEffort turns a limit whose controller is unavailable into a
	// warning (Run.Warnings) instead of an error from Create.
	BestEffort bool `json:"best_effort,omitempty"`
}

// IsZero reports whether l asks for nothing.
func (l Limits) IsZero() bool {
	return l.MemoryMax == 0 && l.MemoryHigh == 0 && l.PidsMax == 0 && l.CPUMax.IsZero() &&
		l.CPUWeight == 0 && l.OOMGroup == nil
}

// Validate checks the ranges of l.
func (l Limits) Validate() error {
	for _, v := range []struct {
		name string
		val  int64
	}{{"memory.max", l.MemoryMax}, {"memory.high", l.MemoryHigh}, {"pids.max", l.PidsMax}} {
		if v.val < LimitMax {
			return fmt.Errorf("%w: %s %d", ErrBadLimit, v.name, v.val)
		}
	}
	if l.CPUWeight != 0 && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
		return fmt.Errorf("%w: cpu.weight %d is not in 1-10000", ErrBadLimit, l.CPUWeight)
	}
	return l.CPUMax.validate()
}

// CPUMax is the content of cpu.max. The zero value leaves it alone.
type CPUMax struct {
	// QuotaUsec is the CPU time allowed per period, in microseconds;
	// LimitMax means no limit.
	QuotaUsec int64 `json:"quota_usec"`
	// PeriodUsec is the period in microseconds; 0 means 100000 (100 ms).
	PeriodUsec uint64 `json:"period_usec,omitempty"`
}

// DefaultCPUPeriod is the kernel's default cpu.max period (100 ms).
const DefaultCPUPeriod = 100000

// IsZero reports whether c leaves cpu.max alone.
func (c CPUMax) IsZero() bool { return c.QuotaUsec == 0 && c.PeriodUsec == 0 }

func (c CPUMax) period() uint64 {
	if c.PeriodUsec == 0 {
		return DefaultCPUPeriod
	}
	return c.PeriodUsec
}

func (c CPUMax) validate() error {
	if c.IsZero() {
		return nil
	}
	if c.QuotaUsec != LimitMax && (c.QuotaUsec < 1000 || c.QuotaUsec > math.MaxInt64/2) {
		return fmt.Errorf("%w: cpu.max quota %d us (at least 1000 us)", ErrBadLimit, c.QuotaUsec)
	}
	if p := c.period(); p < 1000 || p > 1000000 {
		return fmt.Errorf("%w: cpu.max period %d us is not in 1000-1000000", ErrBadLimit, p)
	}
	return nil
}

// String is the cpu.max file format ("150000 100000", "max 100000").
func (c CPUMax) String() string {
	q := "max"
	if c.QuotaUsec != LimitMax {
		q = strconv.FormatInt(c.QuotaUsec, 10)
	}
	return q + " " + strconv.FormatUint(c.period(), 10)
}

// ParseCPUMax parses a CPU limit: a CPU count ("1.5" = 150 ms per 100 ms),
// "QUOTA/PERIOD" in microseconds ("50000/100000"), the cpu.max file format
// ("50000 100000") or "max".
func ParseCPUMax(s string) (CPUMax, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return CPUMax{QuotaUsec: LimitMax}, nil
	}
	sep := strings.IndexAny(s, "/ ")
	if sep < 0 {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) || n > 1e6 {
			return CPUMax{}, fmt.Errorf("%w: cpu %q: want a CPU count (1.5), QUOTA/PERIOD in us, or max", ErrBadLimit, s)
		}
		c := CPUMax{QuotaUsec: int64(math.Round(n * DefaultCPUPeriod))}
		return c, c.validate()
	}
	qs, ps := strings.TrimSpace(s[:sep]), strings.TrimSpace(s[sep+1:])
	var c CPUMax
	if qs == "max" {
		c.QuotaUsec = LimitMax
	} else {
		q, err := strconv.ParseInt(qs, 10, 64)
		if err != nil || q <= 0 {
			return CPUMax{}, fmt.Errorf("%w: cpu quota %q", ErrBadLimit, qs)
		}
		c.QuotaUsec = q
	}
	p, err := strconv.ParseUint(ps, 10, 64)
	if err != nil || p == 0 {
		return CPUMax{}, fmt.Errorf("%w: cpu period %q", ErrBadLimit, ps)
	}
	c.PeriodUsec = p
	return c, c.validate()
}

// ParseBytes parses a memory size: a number of bytes with an optional
// binary suffix K, M, G or T (also KiB, MB, ... : all powers of 1024, as in
// systemd), or "max" (LimitMax).
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" || s == "infinity" {
		return LimitMax, nil
	}
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	num = strings.TrimSpace(num)
	mult := int64(1)
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I") {
	case "":
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("%w: size %q: unknown unit %q", ErrBadLimit, s, unit)
	}
	if strings.Contains(num, ".") {
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f <= 0 || f*float64(mult) > math.MaxInt64/2 || f*float64(mult) < 1 {
			return 0, fmt.Errorf("%w: size %q", ErrBadLimit, s)
		}
		return int64(f * float64(mult)), nil
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/2/mult {
		return 0, fmt.Errorf("%w: size %q", ErrBadLimit, s)
	}
	return n * mult, nil
}

// ParsePids parses a pids.max value: a positive count or "max".
func ParsePids(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return LimitMax, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: pids %q: want a positive count or max", ErrBadLimit, s)
	}
	return n, nil
}

// FormatBytes renders n like the flags accept it (64M, 1G, 1536K).
func FormatBytes(n int64) string {
	if n == LimitMax {
		return "max"
	}
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

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

// NetMode selects a run's network namespace.
type NetMode string

// Network modes.
const (
	// NetHost: the workers share the supervisor's network namespace.
	NetHost NetMode = "host"
	// NetNone: a new network namespace with only loopback, up.
	NetNone NetMode = "none"
	// NetNamed: join the namespace bound at /run/netns/<Name>.
	NetNamed NetMode = "named"
)

// Net is a run's network namespace. The zero value is NetHost.
type Net struct {
	Mode NetMode `json:"mode,omitempty"`
	// Name is the /run/netns name for NetNamed.
	Name string `json:"name,omitempty"`
}

// ParseNet parses a --net value: "host", "none", or the name of a
// namespace under /run/netns (as made by "ip netns add NAME"). A namespace
// that is itself called "host" or "none" is reached as "netns:NAME".
func ParseNet(s string) (Net, error) {
	switch s {
	case "", string(NetHost):
		return Net{Mode: NetHost}, nil
	case string(NetNone):
		return Net{Mode: NetNone}, nil
	}
	name := strings.TrimPrefix(s, "netns:")
	if err := ValidNetnsName(name); err != nil {
		return Net{}, err
	}
	return Net{Mode: NetNamed, Name: name}, nil
}

// Validate checks the mode and name of n.
func (n Net) Validate() error {
	switch n.Mode {
	case "", NetHost, NetNone:
		if n.Name != "" {
			return fmt.Errorf("%w: mode %q takes no name", ErrBadNetns, n.Mode)
		}
		return nil
	case NetNamed:
		return ValidNetnsName(n.Name)
	}
	return fmt.Errorf("%w: unknown mode %q (host, none or named)", ErrBadNetns, n.Mode)
}

func (n Net) String() string {
	switch n.Mode {
	case NetNamed:
		return n.Name
	case "":
		return string(NetHost)
	}
	return string(n.Mode)
}

// ValidNetnsName accepts what "ip netns add" would make a file of under
// /run/netns: a non-empty name of at most 255 bytes without "/" or NUL,
// other than "." and "..". The name becomes a path component, so this is a
// security check.
func ValidNetnsName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: name %q (want a file name under /run/netns, without '/')", ErrBadNetns, name)
	}
	return nil
}

// Credential is who a worker runs as. The zero value keeps the
// supervisor's user and sets no_new_privs.
type Credential struct {
	// User is a user name or numeric UID; empty keeps ours. A user from
	// the user database also sets the primary group, the supplementary
	// groups and USER, LOGNAME and HOME.
	User string `json:"user,omitempty"`
	// Group is a group name or numeric GID; empty means the user's primary
	// group (or, for a numeric UID not in the database, the GID equal to
	// the UID).
	Group string `json:"group,omitempty"`
	// Groups are the supplementary groups (names or GIDs). nil means the
	// user's groups from the database; an empty non-nil list means none.
	Groups []string `json:"groups,omitzero"`
	// NewPrivileges allows the worker to gain privileges through execve
	// (set-user-ID binaries, file capabilities). By default no_new_privs
	// is set on every worker.
	NewPrivileges bool `json:"new_privileges,omitempty"`
}

// IsZero reports whether c changes no identity (no_new_privs may still be
// set).
func (c Credential) IsZero() bool { return c.User == "" && c.Group == "" && c.Groups == nil }

// Readiness says when a worker counts as ready. Every configured signal
// must arrive; with none configured a worker is ready once started.
type Readiness struct {
	// Notify gives the worker a NOTIFY_SOCKET (a unixgram socket of its
	// own, sd_notify(3) protocol) and waits for READY=1.
	Notify bool `json:"notify,omitempty"`
	// Line is a regular expression (Go syntax) matched against each line
	// of the worker's stdout until one matches; the output is passed
	// through unchanged.
	Line string `json:"line,omitempty"`
	// Timeout bounds the wait from the worker's start; 0 waits for ever.
	Timeout Duration `json:"timeout,omitzero"`
	// OnStatus, if set, is called with each STATUS= the worker sends.
	OnStatus func(status string) `json:"-"`
}

// IsZero reports whether r configures no readiness signal.
func (r Readiness) IsZero() bool { return !r.Notify && r.Line == "" }

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1.5s", "250ms"); a JSON number is taken as nanoseconds.
type Duration time.Duration

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON accepts a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*d = Duration(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"5s\": %w", err)
	}
	return d.UnmarshalText([]byte(s))
}

// ReadyInfo is what a worker reported when it became ready.
type ReadyInfo struct {
	// At is when the last readiness signal arrived.
	At time.Time `json:"at"`
	// After is how long after the start that was.
	After time.Duration `json:"after"`
	// Status is the last STATUS= the worker sent (notify mode).
	Status string `json:"status,omitempty"`
	// Line is the stdout line that matched (line mode).
	Line string `json:"line,omitempty"`
}

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

// Event is a limit event of a run, reported through Options.OnEvent.
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
		return FormatBytes(n)
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
