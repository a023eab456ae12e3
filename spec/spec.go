package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"time"

	"github.com/snakepit/snakepit/runid"
)

// Run describes a run: the settings of its cgroup and namespaces, shared by
// all its workers.
type Run struct {
	// ID is the run ID (7 characters of [0-9a-z]); empty generates one.
	ID string `json:"id,omitempty"`
	// Grace is the time between SIGTERM and SIGKILL at teardown; 0 means
	// the door's default.
	Grace Duration `json:"grace,omitzero"`
	// StopSignal is the first signal of a teardown, sent to every process
	// of the run before the grace period; zero means SIGTERM.
	StopSignal Signal `json:"stop_signal,omitzero"`
	// Limits are the run cgroup's resource limits.
	Limits Limits `json:"limits,omitzero"`
	// BestEffortLimits turns a limit whose controller is unavailable into
	// a warning instead of an error.
	BestEffortLimits bool `json:"best_effort_limits,omitempty"`
	// Net is the workers' network namespace.
	Net Net `json:"net,omitzero"`
	// PidNS starts every worker under a minimal init in a new PID
	// namespace: nothing in it survives the init.
	PidNS bool `json:"pid_ns,omitempty"`
}

// Validate checks r without touching the system.
func (r Run) Validate() error {
	if r.ID != "" {
		if err := runid.Validate(r.ID); err != nil {
			return fieldErr("id", "--run-id", err)
		}
	}
	if r.Grace < 0 {
		return fieldErr("grace", "--grace", fmt.Errorf("%w: %v is negative", ErrBadDuration, time.Duration(r.Grace)))
	}
	if err := r.StopSignal.Validate(); err != nil {
		return fieldErr("stop_signal", "--stop-signal", err)
	}
	if err := r.Limits.Validate(); err != nil {
		return err
	}
	return fieldErr("net", "--net", r.Net.Validate())
}

// MarshalJSON writes r's JSON form, with Limits.BestEffort (a Go caller's
// other way to say it) as best_effort_limits: dropped, a client's create
// failed where the library's succeeded.
func (r Run) MarshalJSON() ([]byte, error) {
	type plain Run
	p := plain(r)
	p.BestEffortLimits = r.BestEffortLimits || r.Limits.BestEffort
	return json.Marshal(p)
}

// EffectiveLimits returns Limits with BestEffort taken from
// BestEffortLimits.
func (r Run) EffectiveLimits() Limits {
	l := r.Limits
	l.BestEffort = l.BestEffort || r.BestEffortLimits
	return l
}

// Worker describes a process started in a run.
type Worker struct {
	// Argv is the command; Argv[0] is looked up in PATH unless it contains
	// a slash.
	Argv []string `json:"argv"`
	// Env is the worker's environment ("K=V"); SNAKEPIT_RUN_ID is always
	// set. Each door says what nil means (the CLI: ours plus these; the
	// daemon: only PATH).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory.
	Dir string `json:"dir,omitempty"`
	// Stdout and Stderr are files opened for appending (daemon); the CLI
	// passes its own.
	Stdout *string `json:"stdout,omitempty"`
	Stderr *string `json:"stderr,omitempty"`
	// User is a user name or numeric UID; empty keeps the caller's.
	User string `json:"user,omitempty"`
	// Group is a group name or GID; empty means the user's primary group.
	Group string `json:"group,omitempty"`
	// Groups are the supplementary groups; nil means the user's groups
	// from the database, an empty list none.
	Groups []string `json:"groups,omitzero"`
	// NoNewPrivs sets no_new_privs on the worker; nil means true.
	NoNewPrivs *bool `json:"no_new_privs,omitempty"`
	// Ready says when the worker counts as ready.
	Ready Readiness `json:"ready,omitzero"`
	// ReadyTimeout bounds the wait for readiness from the worker's start;
	// a worker not ready by then is killed. 0 waits for ever.
	ReadyTimeout Duration `json:"ready_timeout,omitzero"`
}

// Validate checks w without touching the system (users are looked up when
// the worker starts).
func (w Worker) Validate() error {
	if len(w.Argv) == 0 || w.Argv[0] == "" {
		return fieldErr("argv", "", ErrNoCommand)
	}
	for _, a := range w.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fieldErr("argv", "", fmt.Errorf("%w: argument contains a NUL byte", ErrBadSpec))
		}
	}
	for _, kv := range w.Env {
		if strings.IndexByte(kv, 0) >= 0 || !strings.Contains(kv, "=") || kv[0] == '=' {
			return fieldErr("env", "--setenv", fmt.Errorf("%w: %q is not KEY=VALUE", ErrBadSpec, truncate(kv)))
		}
	}
	for _, p := range []struct {
		field, flag string
		val         *string
	}{{"dir", "--chdir", &w.Dir}, {"stdout", "", w.Stdout}, {"stderr", "", w.Stderr}} {
		if p.val != nil && strings.IndexByte(*p.val, 0) >= 0 {
			return fieldErr(p.field, p.flag, fmt.Errorf("%w: path contains a NUL byte", ErrBadSpec))
		}
	}
	for _, s := range append([]string{w.User, w.Group}, w.Groups...) {
		if strings.ContainsAny(s, "\x00:\n") {
			return fieldErr("user", "--user", fmt.Errorf("%w: %q is not a user or group name", ErrBadSpec, truncate(s)))
		}
	}
	if err := w.Ready.Validate(); err != nil {
		return fieldErr("ready", "--ready-line", err)
	}
	if w.ReadyTimeout < 0 {
		return fieldErr("ready_timeout", "--ready-timeout", fmt.Errorf("%w: %v is negative", ErrBadDuration, time.Duration(w.ReadyTimeout)))
	}
	if w.ReadyTimeout > 0 && w.Ready.IsZero() {
		return fieldErr("ready_timeout", "--ready-timeout", fmt.Errorf("%w: a timeout needs ready notify or a ready line", ErrBadReady))
	}
	return nil
}

// Credential is who the worker runs as.
func (w Worker) Credential() Credential {
	return Credential{User: w.User, Group: w.Group, Groups: w.Groups, NewPrivileges: w.NoNewPrivs != nil && !*w.NoNewPrivs}
}

// Readiness returns Ready with its timeout: ReadyTimeout, else a Go
// caller's Ready.Timeout.
func (w Worker) Readiness() Readiness {
	r := w.Ready
	if w.ReadyTimeout != 0 {
		r.Timeout = w.ReadyTimeout
	}
	return r
}

// MarshalJSON writes w's JSON form, with Ready.Timeout as ready_timeout
// when that is unset (see Readiness).
func (w Worker) MarshalJSON() ([]byte, error) {
	type plain Worker
	p := plain(w)
	p.ReadyTimeout = w.Readiness().Timeout
	return json.Marshal(p)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Credential is who a worker runs as. The zero value keeps the caller's
// user and sets no_new_privs. (Its JSON form is Worker's user, group,
// groups and no_new_privs.)
type Credential struct {
	// User is a user name or numeric UID; empty keeps ours. A user from
	// the user database also sets the primary group, the supplementary
	// groups and USER, LOGNAME and HOME.
	User string
	// Group is a group name or numeric GID; empty means the user's primary
	// group (or, for a numeric UID not in the database, the GID equal to
	// the UID).
	Group string
	// Groups are the supplementary groups (names or GIDs). nil means the
	// user's groups from the database; an empty non-nil list means none.
	Groups []string
	// NewPrivileges allows the worker to gain privileges through execve
	// (set-user-ID binaries, file capabilities). By default no_new_privs
	// is set on every worker.
	NewPrivileges bool
}

// IsZero reports whether c changes no identity (no_new_privs may still be
// set).
func (c Credential) IsZero() bool { return c.User == "" && c.Group == "" && c.Groups == nil }

// Readiness says when a worker counts as ready. Every configured signal
// must arrive; with none configured a worker is ready once started. JSON:
// {"notify": true} or {"line": "REGEX"}.
type Readiness struct {
	// Notify gives the worker a NOTIFY_SOCKET (a unixgram socket of its
	// own, sd_notify(3) protocol) and waits for READY=1.
	Notify bool `json:"notify,omitempty"`
	// Line is a regular expression (Go syntax) matched against each line
	// of the worker's stdout until one matches; the output is passed
	// through unchanged.
	Line string `json:"line,omitempty"`
	// Timeout bounds the wait from the worker's start; 0 waits for ever.
	// Its JSON form is Worker.ReadyTimeout.
	Timeout Duration `json:"-"`
	// OnStatus, if set, is called with each STATUS= the worker sends.
	OnStatus func(status string) `json:"-"`
}

// IsZero reports whether r configures no readiness signal.
func (r Readiness) IsZero() bool { return !r.Notify && r.Line == "" }

// Validate checks that Line compiles.
func (r Readiness) Validate() error {
	if r.Line != "" {
		if _, err := regexp.Compile(r.Line); err != nil {
			return fmt.Errorf("%w: line %q: %v", ErrBadReady, truncate(r.Line), err)
		}
		if n := progSize(r.Line); n > MaxReadyProg {
			return fmt.Errorf("%w: line %q: too complex (%d instructions, at most %d)", ErrBadReady, truncate(r.Line), n, MaxReadyProg)
		}
	}
	if r.Timeout < 0 {
		return fmt.Errorf("%w: timeout %v is negative", ErrBadDuration, time.Duration(r.Timeout))
	}
	return nil
}

// MaxReadyProg bounds a ready line's compiled size: matching costs the
// line's length times it, on the supervisor's CPU (the daemon's, for a
// member's worker), and `[ab]{1000}` repeated made one line cost seconds.
const MaxReadyProg = 1000

// progSize is the number of instructions re compiles to (re compiles).
func progSize(re string) int {
	t, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return 0
	}
	p, err := syntax.Compile(t.Simplify())
	if err != nil {
		return math.MaxInt
	}
	return len(p.Inst)
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

// DecodeRun decodes a JSON run spec strictly (an unknown field is an
// error; an explicit empty "id" is an invalid run ID, not "generate one";
// null is not a spec) and validates it.
func DecodeRun(data []byte) (Run, error) {
	var r Run
	if err := decodeStrict(data, &r); err != nil {
		return Run{}, err
	}
	var idSet struct {
		ID *string `json:"id"`
	}
	_ = json.Unmarshal(data, &idSet)
	if idSet.ID != nil && *idSet.ID == "" {
		return Run{}, EmptyID()
	}
	return r, r.Validate()
}

// DecodeWorker decodes a JSON worker spec strictly and validates it.
func DecodeWorker(data []byte) (Worker, error) {
	var w Worker
	if err := decodeStrict(data, &w); err != nil {
		return Worker{}, err
	}
	return w, w.Validate()
}

// ErrInvalidJSON means a body is not a JSON object of the spec's shape.
var ErrInvalidJSON = errors.New("invalid JSON")

func decodeStrict(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return fmt.Errorf("%w: want a JSON object", ErrInvalidJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		for _, known := range []error{ErrBadSpec, ErrBadLimit, ErrBadNetns, ErrBadDuration, ErrBadReady, ErrBadSignal, runid.ErrInvalid} {
			if errors.Is(err, known) {
				// A setting's own decoder said what is wrong, but not
				// where: encoding/json does not say which field it was.
				if _, ok := errors.AsType[*FieldError](err); !ok {
					if f := fieldOf(data, reflect.TypeOf(v).Elem()); f != "" {
						return fieldErr(f, "", err)
					}
				}
				return err
			}
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return fmt.Errorf("%w: %w %s", ErrInvalidJSON, ErrUnknownField, name)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fieldErr(te.Field, "", fmt.Errorf("%w: want %v, got %s", ErrInvalidJSON, te.Type, te.Value))
		}
		return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	// More is false before a stray '}' or ']': only EOF may follow.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the object", ErrInvalidJSON)
	}
	return nil
}

// fieldOf names the field of the JSON object data (of a t) that does not
// decode, as "limits.memory_max"; "" when none does alone. Each field is
// decoded on its own, into a t of its own: only on an error's path.
func fieldOf(data []byte, t reflect.Type) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return ""
	}
	for _, key := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[key]
		one, _ := json.Marshal(map[string]json.RawMessage{key: raw})
		if json.Unmarshal(one, reflect.New(t).Interface()) == nil {
			continue
		}
		if ft, ok := jsonField(t, key); ok && ft.Kind() == reflect.Struct {
			if sub := fieldOf(raw, ft); sub != "" {
				return key + "." + sub
			}
		}
		return key
	}
	return ""
}

// jsonField returns the type of t's field named key in JSON.
func jsonField(t reflect.Type, key string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name == key {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			return ft, true
		}
	}
	return nil, false
}

// EmptyID is the error of an explicitly empty run ID ("id": "" or
// --run-id ”): omit it to have one generated.
func EmptyID() error {
	return fieldErr("id", "--run-id", fmt.Errorf("%w: empty (omit it to have one generated)", runid.ErrInvalid))
}
