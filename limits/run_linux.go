//go:build linux

package limits

import (
	"errors"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/spec"
)

// Run is one run's limits through its life: planned before its cgroup is
// made (ForRun; nothing is created), written into it and watched right
// after (Apply), and a last look at its events at teardown (Stop). A run
// without a cgroup has ForRunWithoutCgroup instead. All methods accept a
// nil *Run.
type Run struct {
	id       string
	plan     *Plan
	onEvent  func(Event)
	events   *Watcher
	warnings []error
}

// ForRun checks and plans the limits l of run id, to be made under
// parent; onEvent, if set, gets its limit events once applied. A run with
// no limits (accounting only) whose controllers cannot be planned gets no
// plan rather than an error: cgroup.Create says what is wrong with the
// parent better.
func ForRun(id, parent string, l spec.Limits, onEvent func(Event)) (*Run, error) {
	r := &Run{id: id, onEvent: onEvent}
	plan, err := PlanFor(parent, l)
	if err != nil {
		if l.IsZero() && !errors.Is(err, spec.ErrBadLimit) {
			return r, nil
		}
		return nil, err
	}
	r.plan, r.warnings = plan, plan.Warnings()
	return r, nil
}

// ForRunWithoutCgroup is the limits of a run that has no cgroup (POSIX
// mode), where none can work: a *ControllerError for the first one asked
// for, or under BestEffort a warning for each.
func ForRunWithoutCgroup(l spec.Limits) (*Run, error) {
	r := &Run{}
	for _, n := range Needs(l) {
		cerr := &ControllerError{Controller: n.Ctrl, Needed: n.Why, Reason: "this run has no cgroup (POSIX mode)"}
		if !l.BestEffort {
			return nil, cerr
		}
		r.warnings = append(r.warnings, cerr)
	}
	return r, nil
}

// Apply enables the controllers and writes the limits into the new run
// cgroup, and starts watching its limit events. No worker has started.
func (r *Run) Apply(cg *cgroup.Group) error {
	if r == nil || r.plan == nil {
		return nil
	}
	if err := r.plan.Apply(cg); err != nil {
		return err
	}
	if r.onEvent != nil {
		w, err := Watch(r.id, cg.Path(), r.onEvent)
		if err != nil {
			return err
		}
		r.events = w
	}
	return nil
}

// Stop ends the event watch after a last look at the counters; the cgroup
// must still exist for that look to see anything.
func (r *Run) Stop() {
	if r != nil {
		r.events.Stop()
	}
}

// Warnings returns what was left out under BestEffort (one
// *ControllerError per missing controller).
func (r *Run) Warnings() []error {
	if r == nil {
		return nil
	}
	return append([]error(nil), r.warnings...)
}
