package jail

import (
	"bytes"
	"errors"
	"os/exec"
	"slices"
	"testing"

	"github.com/snakepit/snakepit/spec"
)

// A missing named namespace fails when the run is made, not at its first
// worker.
func TestNewRunChecksNamedNetns(t *testing.T) {
	_, err := NewRun(spec.Net{Mode: spec.NetNamed, Name: "snakepit-no-such-netns"})
	if !errors.Is(err, ErrNoNetns) {
		t.Fatalf("NewRun: %v, want ErrNoNetns", err)
	}
}

// Prepare sets what the jail owns on the command, leaves the rest alone,
// and refuses once the run is closed.
func TestRunPrepare(t *testing.T) {
	j, err := NewRun(spec.Net{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	modified := false
	c := Command{
		Env:       []string{"A=1"},
		Stdout:    &out,
		Modify:    func(*exec.Cmd) { modified = true },
		Readiness: spec.Readiness{Line: "^up$"},
	}
	ready, nnp, err := j.Prepare(&c, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Cleanup()
	if !nnp {
		t.Error("no_new_privs off for the zero Credential")
	}
	if c.Stdout == &out {
		t.Error("stdout not wrapped for line readiness")
	}
	if !slices.Equal(c.Env, []string{"A=1"}) {
		t.Errorf("Env = %q: nothing to add for line readiness", c.Env)
	}
	c.Modify(&exec.Cmd{})
	if !modified {
		t.Error("the caller's Modify was dropped")
	}

	j.Close()
	if _, _, err := j.Prepare(&Command{}, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Prepare after Close: %v, want ErrClosed", err)
	}
}
