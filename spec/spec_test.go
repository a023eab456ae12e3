package spec

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/snakepit/snakepit/runid"
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

// One JSON form: what the daemon accepts is what the CLI's flags say, and
// it round-trips.
func TestSpecJSON(t *testing.T) {
	on, off := true, false
	run := Run{ID: "abc0xyz", Grace: Duration(2 * time.Second), BestEffortLimits: true, PidNS: true,
		Limits: Limits{MemoryMax: 64 << 20, MemoryHigh: LimitMax, PidsMax: 100, CPUMax: CPUMax{QuotaUsec: 150000, PeriodUsec: 100000}, CPUWeight: 50, OOMGroup: &on},
		Net:    Net{Mode: NetNone}}
	b, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"abc0xyz","grace":"2s","limits":{"memory_max":"64M","memory_high":"max","pids_max":100,"cpu_max":"150000/100000","cpu_weight":50,"oom_group":true},"best_effort_limits":true,"net":"none","pid_ns":true}`
	if string(b) != want {
		t.Errorf("run JSON\n%s\nwant\n%s", b, want)
	}
	back, err := DecodeRun(b)
	if err != nil || !reflect.DeepEqual(back, run) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	w := Worker{Argv: []string{"sleep", "1"}, Env: []string{"A=1"}, Dir: "/tmp", User: "nobody", Groups: []string{},
		NoNewPrivs: &off, Ready: Readiness{Line: "^READY$"}, ReadyTimeout: Duration(time.Second)}
	b, err = json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	want = `{"argv":["sleep","1"],"env":["A=1"],"dir":"/tmp","user":"nobody","groups":[],"no_new_privs":false,"ready":{"line":"^READY$"},"ready_timeout":"1s"}`
	if string(b) != want {
		t.Errorf("worker JSON\n%s\nwant\n%s", b, want)
	}
	wb, err := DecodeWorker(b)
	if err != nil || !reflect.DeepEqual(wb, w) {
		t.Errorf("round trip: %+v, %v", wb, err)
	}
	if c := wb.Credential(); !c.NewPrivileges || c.User != "nobody" {
		t.Errorf("credential %+v", c)
	}
	// A Go caller's other spellings survive the JSON form (a client's
	// request): Limits.BestEffort and Ready.Timeout.
	b, err = json.Marshal(Run{Limits: Limits{PidsMax: 64, BestEffort: true}})
	if err != nil || string(b) != `{"limits":{"pids_max":64},"best_effort_limits":true}` {
		t.Errorf("run with Limits.BestEffort: %s, %v", b, err)
	}
	lw := Worker{Argv: []string{"x"}, Ready: Readiness{Line: "R", Timeout: Duration(time.Second)}}
	if lw.Readiness().Timeout != Duration(time.Second) {
		t.Errorf("Readiness dropped Ready.Timeout: %+v", lw.Readiness())
	}
	b, err = json.Marshal(lw)
	if err != nil || string(b) != `{"argv":["x"],"ready":{"line":"R"},"ready_timeout":"1s"}` {
		t.Errorf("worker with Ready.Timeout: %s, %v", b, err)
	}
	// Sizes and counts also as JSON numbers, CPUs as a number.
	r, err := DecodeRun([]byte(`{"limits":{"memory_max":1048576,"pids_max":"max","cpu_max":1.5}}`))
	if err != nil || r.Limits.MemoryMax != 1<<20 || r.Limits.PidsMax != LimitMax || r.Limits.CPUMax.QuotaUsec != 150000 {
		t.Errorf("numbers: %+v, %v", r.Limits, err)
	}
	// A duration is a string with a unit; of numbers, only 0 (no unit
	// needed) is taken: {"grace": 5} used to be 5 ns.
	var d Duration
	for _, in := range []string{`5`, `1500000000`, `-1`, `1.5`, `"5"`} {
		if err := json.Unmarshal([]byte(in), &d); !errors.Is(err, ErrBadDuration) {
			t.Errorf("duration %s: %v, want ErrBadDuration", in, err)
		}
	}
	if err := json.Unmarshal([]byte(`0`), &d); err != nil || d != 0 {
		t.Errorf("duration 0: %v %v", d, err)
	}
	if r, err := DecodeRun([]byte(`{"grace":null}`)); err != nil || r.Grace != 0 {
		t.Errorf("grace null (unset): %+v %v", r, err)
	}
	if err := json.Unmarshal([]byte(`"2m"`), &d); err != nil || time.Duration(d) != 2*time.Minute {
		t.Errorf("string duration: %v %v", d, err)
	}
}

// Every rejected spec wraps the sentinel its doors map to a status.
func TestDecodeRejects(t *testing.T) {
	for body, want := range map[string]error{
		`null`:                             ErrInvalidJSON,
		`[]`:                               ErrInvalidJSON,
		`{"memory_max":"64M"}`:             ErrUnknownField,
		`{"id":""}`:                        runid.ErrInvalid,
		`{"id":"ABC"}`:                     runid.ErrInvalid,
		`{"limits":{"memory_max":"12Q"}}`:  ErrBadLimit,
		`{"limits":{"memory_max":-5}}`:     ErrBadLimit,
		`{"limits":{"pids_max":-3}}`:       ErrBadLimit,
		`{"limits":{"cpu_weight":20000}}`:  ErrBadLimit,
		`{"net":"a/b"}`:                    ErrBadNetns,
		`{"grace":"5"}`:                    ErrBadDuration,
		`{"grace":"-1s"}`:                  ErrBadDuration,
		`{"grace":"9999999999999999999h"}`: ErrBadDuration,
		`{"pid_ns":"yes"}`:                 ErrInvalidJSON,
		`{"id":"abc0xyz"} {}`:              ErrInvalidJSON,
		`{}}`:                              ErrInvalidJSON,
		`{}]`:                              ErrInvalidJSON,
		`{"grace":5}`:                      ErrBadDuration,
	} {
		if _, err := DecodeRun([]byte(body)); !errors.Is(err, want) {
			t.Errorf("DecodeRun(%s) = %v; want %v", body, err, want)
		}
	}
	for body, want := range map[string]error{
		`{}`:                                  ErrNoCommand,
		`{"argv":["x"],"ready":{"line":"("}}`: ErrBadReady,
		`{"argv":["x"],"ready":{"line":"[ab]{1000}z"}}`: ErrBadReady,
		`{"argv":["x"],"ready_timeout":"1s"}`:           ErrBadReady,
		`{"argv":["x"],"env":["NOEQUALS"]}`:             ErrBadSpec,
		`{"argv":["x"],"user":"a:b"}`:                   ErrBadSpec,
		`{"argv":["x"],"stdin":"/dev/null"}`:            ErrUnknownField,
	} {
		if _, err := DecodeWorker([]byte(body)); !errors.Is(err, want) {
			t.Errorf("DecodeWorker(%s) = %v; want %v", body, err, want)
		}
	}
	// A Go caller's value is checked too (JSON takes names only).
	for _, sig := range []Signal{999, -1, 65} {
		if err := (Run{StopSignal: sig}).Validate(); !errors.Is(err, ErrBadSignal) {
			t.Errorf("Run{StopSignal: %d}.Validate() = %v, want ErrBadSignal", sig, err)
		}
	}
	// A real-time signal has no name but is one (SIGRTMIN+3 = 37).
	if err := (Run{StopSignal: 37}).Validate(); err != nil {
		t.Errorf("Run{StopSignal: 37}.Validate() = %v", err)
	}
	_, err := DecodeRun([]byte(`{"grace":"9999999999999999999h"}`))
	if err == nil || !strings.Contains(err.Error(), "9999999999999999999h") {
		t.Errorf("overflow names the input: %v", err)
	}
}

// A value that its own type's decoder refuses is named by its JSON field,
// as a value that fails validation is (encoding/json does not say which
// field a decoder's error came from).
func TestDecodeNamesTheField(t *testing.T) {
	decodeRun := func(b []byte) error { _, err := DecodeRun(b); return err }
	decodeWorker := func(b []byte) error { _, err := DecodeWorker(b); return err }
	for _, c := range []struct {
		decode func([]byte) error
		body   string
		field  string
	}{
		{decodeRun, `{"limits":{"memory_max":-5}}`, "limits.memory_max"},
		{decodeRun, `{"pid_ns":true,"limits":{"pids_max":"a","memory_max":"64M"}}`, "limits.pids_max"},
		{decodeRun, `{"limits":{"cpu_max":"x"}}`, "limits.cpu_max"},
		{decodeRun, `{"grace":"abc"}`, "grace"},
		{decodeRun, `{"stop_signal":"FOO"}`, "stop_signal"},
		{decodeWorker, `{"argv":["x"],"ready":{"notify":true},"ready_timeout":"zz"}`, "ready_timeout"},
	} {
		err := c.decode([]byte(c.body))
		fe, ok := errors.AsType[*FieldError](err)
		if !ok || fe.Field != c.field {
			t.Errorf("%s: %v; want an error of field %s", c.body, err, c.field)
		}
	}
}
