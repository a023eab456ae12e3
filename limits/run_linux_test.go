package limits

import (
	"errors"
	"testing"

	"github.com/snakepit/snakepit/spec"
)

// Without a cgroup a limit is an error, or under BestEffort a warning per
// controller; no limits is neither.
func TestForRunWithoutCgroup(t *testing.T) {
	if r, err := ForRunWithoutCgroup(spec.Limits{}); err != nil || len(r.Warnings()) != 0 {
		t.Fatalf("no limits: %v, warnings %v", err, r.Warnings())
	}
	l := spec.Limits{MemoryMax: 1 << 30, PidsMax: 10}
	var cerr *ControllerError
	if _, err := ForRunWithoutCgroup(l); !errors.As(err, &cerr) || cerr.Controller != "memory" {
		t.Fatalf("memory.max without a cgroup: %v, want a *ControllerError for memory", err)
	}
	l.BestEffort = true
	r, err := ForRunWithoutCgroup(l)
	if err != nil {
		t.Fatal(err)
	}
	if w := r.Warnings(); len(w) != 2 || !errors.Is(w[0], ErrControllerUnavailable) {
		t.Fatalf("BestEffort warnings %v, want 2 ControllerErrors", w)
	}
	// A nil Run is a run with no limits.
	var none *Run
	if none.Apply(nil) != nil || none.Warnings() != nil {
		t.Fatal("nil Run")
	}
	none.Stop()
}
