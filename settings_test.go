package snakepit

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "4096": 4096, "64K": 64 << 10, "64M": 64 << 20, "1G": 1 << 30, "2T": 2 << 40,
		"64MiB": 64 << 20, "64mb": 64 << 20, "1.5G": 3 << 29, " 8M ": 8 << 20, "max": LimitMax, "infinity": LimitMax,
	} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "M", "12X", "1.2.3G", "99999999999T", "0.0000001K"} {
		if got, err := ParseBytes(in); !errors.Is(err, ErrBadLimit) {
			t.Errorf("ParseBytes(%q) = %d, %v; want ErrBadLimit", in, got, err)
		}
	}
	for _, n := range []int64{1, 1 << 20, 3 << 29, LimitMax, 1000} {
		if got, err := ParseBytes(FormatBytes(n)); err != nil || got != n {
			t.Errorf("round trip %d via %q: %d, %v", n, FormatBytes(n), got, err)
		}
	}
}

func TestParseCPUMax(t *testing.T) {
	for in, want := range map[string]string{
		"1.5": "150000 100000", "0.1": "10000 100000", "2": "200000 100000",
		"50000/100000": "50000 100000", "25000 50000": "25000 50000", "max": "max 100000", "max/200000": "max 200000",
	} {
		got, err := ParseCPUMax(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseCPUMax(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "abc", "1/0", "500/100000", "50000/100", "NaN", "1e9"} {
		if got, err := ParseCPUMax(in); !errors.Is(err, ErrBadLimit) {
			t.Errorf("ParseCPUMax(%q) = %v, %v; want ErrBadLimit", in, got, err)
		}
	}
}

func TestParsePids(t *testing.T) {
	if n, err := ParsePids("64"); n != 64 || err != nil {
		t.Errorf("64: %d %v", n, err)
	}
	if n, err := ParsePids("max"); n != LimitMax || err != nil {
		t.Errorf("max: %d %v", n, err)
	}
	for _, in := range []string{"0", "-2", "x", ""} {
		if _, err := ParsePids(in); !errors.Is(err, ErrBadLimit) {
			t.Errorf("ParsePids(%q): %v", in, err)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	ok := []Limits{{}, {MemoryMax: LimitMax, PidsMax: 10, CPUWeight: 1}, {CPUWeight: 10000}}
	for _, l := range ok {
		if err := l.Validate(); err != nil {
			t.Errorf("%+v: %v", l, err)
		}
	}
	bad := []Limits{{MemoryMax: -2}, {CPUWeight: 10001}, {CPUMax: CPUMax{QuotaUsec: 10}}, {CPUMax: CPUMax{QuotaUsec: 5000, PeriodUsec: 10}}}
	for _, l := range bad {
		if err := l.Validate(); !errors.Is(err, ErrBadLimit) {
			t.Errorf("%+v: %v", l, err)
		}
	}
}

func TestParseNet(t *testing.T) {
	for in, want := range map[string]Net{
		"": {Mode: NetHost}, "host": {Mode: NetHost}, "none": {Mode: NetNone},
		"blue": {Mode: NetNamed, Name: "blue"}, "netns:none": {Mode: NetNamed, Name: "none"}, "a.b-c_d": {Mode: NetNamed, Name: "a.b-c_d"},
	} {
		got, err := ParseNet(in)
		if err != nil || got != want {
			t.Errorf("ParseNet(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{".", "..", "a/b", "../x", "netns:", "x\x00y", string(make([]byte, 256))} {
		if _, err := ParseNet(in); !errors.Is(err, ErrBadNetns) {
			t.Errorf("ParseNet(%q): %v", in, err)
		}
	}
	if err := (Net{Mode: "bridge"}).Validate(); !errors.Is(err, ErrBadNetns) {
		t.Errorf("unknown mode: %v", err)
	}
}

// The settings are meant to be embedded in the daemon's API as JSON.
func TestSettingsJSON(t *testing.T) {
	on := true
	in := struct {
		Limits     Limits     `json:"limits"`
		Net        Net        `json:"net"`
		Credential Credential `json:"credential"`
		Readiness  Readiness  `json:"readiness"`
	}{
		Limits:     Limits{MemoryMax: 64 << 20, PidsMax: 100, CPUMax: CPUMax{QuotaUsec: 150000}, OOMGroup: &on},
		Net:        Net{Mode: NetNone},
		Credential: Credential{User: "nobody", Groups: []string{}},
		Readiness:  Readiness{Notify: true, Timeout: Duration(5 * time.Second)},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"limits":{"memory_max":67108864,"pids_max":100,"cpu_max":{"quota_usec":150000},"oom_group":true},"net":{"mode":"none"},"credential":{"user":"nobody","groups":[]},"readiness":{"notify":true,"timeout":"5s"}}`
	if string(b) != want {
		t.Errorf("JSON\n%s\nwant\n%s", b, want)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`1500000000`), &d); err != nil || time.Duration(d) != 1500*time.Millisecond {
		t.Errorf("number duration: %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`"2m"`), &d); err != nil || time.Duration(d) != 2*time.Minute {
		t.Errorf("string duration: %v %v", d, err)
	}
}

func TestControllerError(t *testing.T) {
	err := error(&ControllerError{Controller: "memory", Needed: "--memory-max", Reason: "bound to the cgroup v1 hierarchy 4"})
	if !errors.Is(err, ErrControllerUnavailable) {
		t.Error("not ErrControllerUnavailable")
	}
	want := "cgroup controller memory unavailable (needed for --memory-max): bound to the cgroup v1 hierarchy 4"
	if err.Error() != want {
		t.Errorf("%q", err)
	}
}
