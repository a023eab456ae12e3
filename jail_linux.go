//go:build linux

package snakepit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/spawn"
)

// runJail holds a run's jail settings: the planned limits, the event watcher
// and the network namespace. Create calls it at three points: before
// the run cgroup is made (prepareJail: check, plan; nothing is created),
// right after (apply: enable controllers, write limits, watch events) and
// at teardown (close). A run made without a cgroup (POSIX mode) gets
// posixJail instead.
type runJail struct {
	id       string
	opts     Options
	plan     *limits.Plan
	events   *limits.Watcher
	warnings []error

	netMu  sync.Mutex
	net    *jail.Netns
	netErr error
	netSet bool
	closed bool
}

// prepareJail checks the jail settings of a run to be made under parent and
// plans its limits. It creates nothing.
func prepareJail(id, parent string, opts Options) (*runJail, error) {
	// opts was validated by Create (its Net too).
	if opts.Net.Mode == NetNamed {
		// Fail early on a missing or bad name; the namespace is opened
		// again at the first Start.
		if err := jail.CheckNamed(opts.Net.Name); err != nil {
			return nil, err
		}
	}
	j := &runJail{id: id, opts: opts}
	plan, err := limits.PlanFor(parent, opts.Limits)
	if err != nil {
		if opts.Limits.IsZero() && !errors.Is(err, ErrBadLimit) {
			return j, nil // accounting only: leave the cgroup errors to cgroup.Create
		}
		return nil, err
	}
	j.plan = plan
	j.warnings = plan.Warnings()
	return j, nil
}

// apply enables the controllers and writes the limits into the new run
// cgroup, and starts watching its limit events. No worker has started.
func (j *runJail) apply(cg *cgroup.Group) error {
	if j == nil || j.plan == nil {
		return nil
	}
	if err := j.plan.Apply(cg); err != nil {
		return err
	}
	if j.opts.OnEvent != nil {
		w, err := limits.Watch(j.id, cg.Path(), j.opts.OnEvent)
		if err != nil {
			return err
		}
		j.events = w
	}
	return nil
}

// netns returns the run's network namespace, opening or creating it on the
// first call.
func (j *runJail) netns() (*jail.Netns, error) {
	j.netMu.Lock()
	defer j.netMu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	if !j.netSet {
		j.net, j.netErr = jail.OpenNet(j.opts.Net)
		j.netSet = true
	}
	return j.net, j.netErr
}

// close stops the event watcher (after a last look at the counters) and
// drops the run's handle on its network namespace. It runs at the start of
// Teardown, while the cgroup still exists.
func (j *runJail) close() {
	if j == nil {
		return
	}
	j.events.Stop()
	j.netMu.Lock()
	j.closed = true
	j.net.Close()
	j.netMu.Unlock()
}

// Warnings returns what Create had to leave out under
// Limits.BestEffort (one *ControllerError per missing controller).
func (r *Run) Warnings() []error {
	return append([]error(nil), r.jail.warnings...)
}

// posixJail is the jail of a run without a cgroup, where limits cannot
// work: an error, or under BestEffort warnings.
func posixJail(id string, opts Options) (*runJail, error) {
	j := &runJail{id: id, opts: opts}
	l := opts.Limits
	for _, n := range limits.Needs(l) {
		cerr := &ControllerError{Controller: n.Ctrl, Needed: n.Why, Reason: "this run has no cgroup (POSIX mode)"}
		if !l.BestEffort {
			return nil, cerr
		}
		j.warnings = append(j.warnings, cerr)
	}
	return j, nil
}

// cmdJail is what a Start needs from the jail for one worker.
type cmdJail struct {
	ready *jail.Ready
	nnp   bool
}

// prepareCommand applies the jail settings of the run and of c to c (env,
// stdout, credentials, network namespace) before the worker is started.
func (r *Run) prepareCommand(c *Command) (*cmdJail, error) {
	rn, err := r.jail.netns()
	if err != nil {
		return nil, err
	}
	rc, err := jail.Resolve(c.Credential)
	if err != nil {
		return nil, err
	}
	if rc != nil && r.box.Group() != nil && !spawn.Clone3Supported() {
		// The pre-exec placement has the child write its own PID into
		// cgroup.procs, which an unprivileged worker cannot do.
		return nil, fmt.Errorf("--user/--group need clone3 CLONE_INTO_CGROUP, which this kernel refused")
	}
	uid, gid := -1, -1
	if rc != nil {
		uid, gid = rc.UID(), rc.GID()
	}
	rs, err := jail.NewReady(c.Readiness, r.CgroupPath(), uid, gid)
	if err != nil {
		return nil, err
	}
	extra := rs.Env()
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	if rc != nil {
		extra = append(extra, jail.UserEnv(env, rc.Env())...)
	}
	if len(extra) > 0 {
		c.Env = jail.OverrideEnv(env, extra)
	}
	c.Stdout = rs.WrapStdout(c.Stdout)
	if rc != nil {
		inner := c.Modify
		c.Modify = func(cmd *exec.Cmd) {
			if inner != nil {
				inner(cmd)
			}
			cmd.SysProcAttr.Credential = rc.SysProcCredential()
		}
	}
	c.Around = rn.Around(c.Around)
	return &cmdJail{ready: rs, nnp: !c.Credential.NewPrivileges}, nil
}

// closeJail closes the run's jail (Teardown).
func (r *Run) closeJail() { r.jail.close() }

// Ready is closed when the worker is ready (at once when no readiness was
// configured).
func (w *Worker) Ready() <-chan struct{} { return w.ready.Chan() }

// ReadyInfo returns what the worker reported and whether it is ready.
func (w *Worker) ReadyInfo() (ReadyInfo, bool) { return w.ready.Info() }

// WaitReady blocks until the worker is ready. It fails with ErrNotReady
// when the Readiness.Timeout (counted from the start) passes first, with
// ErrExitedBeforeReady when the worker exits first, or with ctx's error.
// It does not tear anything down: the caller decides (snakepit run tears
// the run down and exits with status 119).
func (w *Worker) WaitReady(ctx context.Context) (ReadyInfo, error) {
	return w.ready.Wait(ctx, func() string {
		st, _ := w.Wait(context.WithoutCancel(ctx))
		return st.String()
	})
}
