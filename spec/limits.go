package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DefaultGrace is the time between SIGTERM and SIGKILL at teardown when
// nothing else is chosen.
const DefaultGrace = 5 * time.Second

// LimitMax, as a memory or pids limit, writes "max" (no limit) explicitly;
// zero leaves the file alone.
const LimitMax = -1

// DefaultCPUPeriod is the kernel's default cpu.max period (100 ms).
const DefaultCPUPeriod = 100000

// Limits are a run's resource limits, written to its cgroup (the cgroup v2
// interface files named in the comments). The zero value sets nothing.
type Limits struct {
	// MemoryMax is memory.max in bytes: the hard limit; the OOM killer acts
	// above it. 0 leaves it alone, LimitMax writes "max".
	MemoryMax Bytes `json:"memory_max,omitempty"`
	// MemoryHigh is memory.high in bytes: the throttling limit.
	MemoryHigh Bytes `json:"memory_high,omitempty"`
	// PidsMax is pids.max: how many processes and threads the run may have.
	PidsMax Count `json:"pids_max,omitempty"`
	// CPUMax is cpu.max: at most Quota microseconds of CPU time per Period.
	CPUMax CPUMax `json:"cpu_max,omitzero"`
	// CPUWeight is cpu.weight (1-10000, default 100).
	CPUWeight uint64 `json:"cpu_weight,omitempty"`
	// OOMGroup is memory.oom.group: when the OOM killer picks a process of
	// the run it kills the whole run (systemd's OOMPolicy=kill). nil means
	// on wherever the memory controller is available to the run.
	OOMGroup *bool `json:"oom_group,omitempty"`
	// BestEffort turns a limit whose controller is unavailable into a
	// warning instead of an error. Its JSON form is Run.BestEffortLimits.
	BestEffort bool `json:"-"`
}

// IsZero reports whether l asks for nothing.
func (l Limits) IsZero() bool {
	return l.MemoryMax == 0 && l.MemoryHigh == 0 && l.PidsMax == 0 && l.CPUMax.IsZero() &&
		l.CPUWeight == 0 && l.OOMGroup == nil
}

// Validate checks the ranges of l.
func (l Limits) Validate() error {
	for _, v := range []struct {
		field, flag string
		val         int64
	}{
		{"limits.memory_max", "--memory-max", int64(l.MemoryMax)},
		{"limits.memory_high", "--memory-high", int64(l.MemoryHigh)},
		{"limits.pids_max", "--pids-max", int64(l.PidsMax)},
	} {
		if v.val < LimitMax {
			return fieldErr(v.field, v.flag, fmt.Errorf("%w: %d is negative", ErrBadLimit, v.val))
		}
	}
	if l.CPUWeight != 0 && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
		return fieldErr("limits.cpu_weight", "--cpu-weight", fmt.Errorf("%w: cpu.weight %d is not in 1-10000", ErrBadLimit, l.CPUWeight))
	}
	if err := l.CPUMax.validate(); err != nil {
		return fieldErr("limits.cpu_max", "--cpu-max", err)
	}
	return nil
}

// Bytes is a memory size. JSON: a size string as the CLI takes it ("64M",
// "1.5G", "max") or a number of bytes; written as a size string.
type Bytes int64

// MarshalText writes b as FormatBytes does.
func (b Bytes) MarshalText() ([]byte, error) { return []byte(FormatBytes(int64(b))), nil }

// UnmarshalJSON accepts a size string or a non-negative number of bytes.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var n json.Number
	if err := json.Unmarshal(data, &n); err == nil {
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("%w: size %s: want a positive number of bytes or a size string (64M, max)", ErrBadLimit, n)
		}
		*b = Bytes(v)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("%w: size: want a string like \"64M\" or a number of bytes", ErrBadLimit)
	}
	v, err := ParseBytes(s)
	*b = Bytes(v)
	return err
}

// Set implements flag.Value.
func (b *Bytes) Set(s string) error {
	v, err := ParseBytes(s)
	*b = Bytes(v)
	return err
}

func (b Bytes) String() string {
	if b == 0 {
		return ""
	}
	return FormatBytes(int64(b))
}

// Count is a pids.max value. JSON: a positive number or "max".
type Count int64

// MarshalJSON writes a number, or "max" for LimitMax.
func (c Count) MarshalJSON() ([]byte, error) {
	if c == LimitMax {
		return []byte(`"max"`), nil
	}
	return strconv.AppendInt(nil, int64(c), 10), nil
}

// UnmarshalJSON accepts a positive number or "max".
func (c *Count) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		s = string(data)
	}
	v, err := ParsePids(s)
	*c = Count(v)
	return err
}

// Set implements flag.Value.
func (c *Count) Set(s string) error {
	v, err := ParsePids(s)
	*c = Count(v)
	return err
}

func (c Count) String() string {
	switch c {
	case 0:
		return ""
	case LimitMax:
		return "max"
	}
	return strconv.FormatInt(int64(c), 10)
}

// CPUMax is the content of cpu.max. The zero value leaves it alone. JSON:
// a string as the CLI takes it ("1.5" CPUs, "50000/100000", "max") or a
// number of CPUs; written as "QUOTA/PERIOD" in microseconds.
type CPUMax struct {
	// QuotaUsec is the CPU time allowed per period, in microseconds;
	// LimitMax means no limit.
	QuotaUsec int64
	// PeriodUsec is the period in microseconds; 0 means 100000 (100 ms).
	PeriodUsec uint64
}

// IsZero reports whether c leaves cpu.max alone.
func (c CPUMax) IsZero() bool { return c.QuotaUsec == 0 && c.PeriodUsec == 0 }

// Period is the period in microseconds, the default when unset.
func (c CPUMax) Period() uint64 {
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
	if p := c.Period(); p < 1000 || p > 1000000 {
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
	return q + " " + strconv.FormatUint(c.Period(), 10)
}

// MarshalText writes "QUOTA/PERIOD" ("max/100000").
func (c CPUMax) MarshalText() ([]byte, error) {
	return []byte(strings.Replace(c.String(), " ", "/", 1)), nil
}

// UnmarshalJSON accepts a string ParseCPUMax takes or a number of CPUs.
func (c *CPUMax) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		s = string(data)
	}
	v, err := ParseCPUMax(s)
	*c = v
	return err
}

// Set implements flag.Value.
func (c *CPUMax) Set(s string) error {
	v, err := ParseCPUMax(s)
	*c = v
	return err
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
