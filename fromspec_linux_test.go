package snakepit

import (
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit/snakepit/spec"
)

// TestOptionsMirrorSpec: every setting of spec.Run reaches Options through
// FromSpec, and every setting of spec.Worker reaches Command through
// CommandFromSpec, so a new spec field cannot be forgotten by the library.
func TestOptionsMirrorSpec(t *testing.T) {
	on, off := true, false
	run := spec.Run{ID: "abc0xyz", Grace: spec.Duration(3 * time.Second), StopSignal: spec.Signal(syscall.SIGINT), BestEffortLimits: true, PidNS: true,
		Limits: spec.Limits{MemoryMax: 1 << 20, OOMGroup: &on}, Net: spec.Net{Mode: spec.NetNone}}
	mapped := map[string]func(Options) bool{
		"ID":               func(o Options) bool { return o.ID == run.ID },
		"Grace":            func(o Options) bool { return o.Grace == 3*time.Second },
		"StopSignal":       func(o Options) bool { return o.StopSignal == syscall.SIGINT },
		"Limits":           func(o Options) bool { return o.Limits.MemoryMax == run.Limits.MemoryMax && o.Limits.OOMGroup == &on },
		"BestEffortLimits": func(o Options) bool { return o.Limits.BestEffort },
		"Net":              func(o Options) bool { return o.Net == run.Net },
		"PidNS":            func(o Options) bool { return o.PidNS },
	}
	o := FromSpec(run)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[spec.Run]()) {
		check, ok := mapped[f.Name]
		if !ok {
			t.Errorf("spec.Run.%s: FromSpec and this test do not map it to Options", f.Name)
		} else if !check(o) {
			t.Errorf("spec.Run.%s did not reach Options: %+v", f.Name, o)
		}
	}

	out, errp := "/tmp/out", "/tmp/err"
	w := spec.Worker{Argv: []string{"x"}, Env: []string{"A=1"}, Dir: "/d", Stdout: &out, Stderr: &errp,
		User: "u", Group: "g", Groups: []string{"h"}, NoNewPrivs: &off,
		Ready: spec.Readiness{Line: "^R$"}, ReadyTimeout: spec.Duration(time.Second)}
	door := map[string]bool{"Stdout": true, "Stderr": true} // files: each door opens its own
	wmapped := map[string]func(Command) bool{
		"Argv":         func(c Command) bool { return reflect.DeepEqual(c.Args, w.Argv) },
		"Env":          func(c Command) bool { return reflect.DeepEqual(c.Env, w.Env) },
		"Dir":          func(c Command) bool { return c.Dir == w.Dir },
		"User":         func(c Command) bool { return c.Credential.User == "u" },
		"Group":        func(c Command) bool { return c.Credential.Group == "g" },
		"Groups":       func(c Command) bool { return reflect.DeepEqual(c.Credential.Groups, w.Groups) },
		"NoNewPrivs":   func(c Command) bool { return c.Credential.NewPrivileges },
		"Ready":        func(c Command) bool { return c.Readiness.Line == "^R$" },
		"ReadyTimeout": func(c Command) bool { return c.Readiness.Timeout == w.ReadyTimeout },
	}
	c := CommandFromSpec(w)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[spec.Worker]()) {
		if door[f.Name] {
			continue
		}
		check, ok := wmapped[f.Name]
		if !ok {
			t.Errorf("spec.Worker.%s: CommandFromSpec and this test do not map it to Command", f.Name)
		} else if !check(c) {
			t.Errorf("spec.Worker.%s did not reach Command: %+v", f.Name, c)
		}
	}
}
