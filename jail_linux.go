//go:build linux

package snakepit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/spawn"
)

// jail holds a run's jail settings: the planned limits, the event watcher
// and the network namespace. run_linux.go calls it at three points: before
// the run cgroup is made (prepareJail: check, plan; nothing is created),
// right after (apply: enable controllers, write limits, watch events) and
// at teardown (close). A run made without a cgroup (POSIX mode) has a nil
// jail until its first Start.
type jail struct {
	id       string
	opts     Options
	plan     *limitPlan
	events   *eventWatcher
	warnings []error

	netMu  sync.Mutex
	net    *runNet
	netErr error
	netSet bool
	closed bool
}

// prepareJail checks the jail settings of a run to be made under parent and
// plans its limits. It creates nothing.
func prepareJail(id, parent string, opts Options) (*jail, error) {
	if err := opts.Net.Validate(); err != nil {
		return nil, err
	}
	if opts.Net.Mode == NetNamed {
		// Fail early on a missing or bad name; the namespace is opened
		// again at the first Start.
		ns, err := openNamedNetns(opts.Net.Name)
		if err != nil {
			return nil, err
		}
		ns.Close()
	}
	j := &jail{id: id, opts: opts}
	plan, err := planLimits(parent, opts.Limits)
	if err != nil {
		if opts.Limits.IsZero() && !errors.Is(err, ErrBadLimit) {
			return j, nil // accounting only: leave the cgroup errors to cgroup.Create
		}
		return nil, err
	}
	j.plan = plan
	j.warnings = plan.warnings
	return j, nil
}

// apply enables the controllers and writes the limits into the new run
// cgroup, and starts watching its limit events. No worker has started.
func (j *jail) apply(cg *cgroup.Group) error {
	if j == nil || j.plan == nil {
		return nil
	}
	if err := j.plan.apply(cg); err != nil {
		return err
	}
	if j.opts.OnEvent != nil {
		w, err := startEventWatcher(j.id, cg.Path(), j.opts.OnEvent)
		if err != nil {
			return err
		}
		j.events = w
	}
	return nil
}

// netns returns the run's network namespace, opening or creating it on the
// first call.
func (j *jail) netns() (*runNet, error) {
	j.netMu.Lock()
	defer j.netMu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	if !j.netSet {
		j.net, j.netErr = openNet(j.opts.Net)
		j.netSet = true
	}
	return j.net, j.netErr
}

// close stops the event watcher (after a last look at the counters) and
// drops the run's handle on its network namespace. It runs at the start of
// Teardown, while the cgroup still exists.
func (j *jail) close() {
	if j == nil {
		return
	}
	j.events.stop()
	j.netMu.Lock()
	j.closed = true
	j.net.close()
	j.netMu.Unlock()
}

// Warnings returns what Create had to leave out under
// Limits.BestEffort (one *ControllerError per missing controller).
func (r *Run) Warnings() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jail == nil {
		return nil
	}
	return append([]error(nil), r.jail.warnings...)
}

// jailOf returns the run's jail, making an empty one for runs created
// without a cgroup (POSIX mode), where limits cannot work.
func (r *Run) jailOf() (*jail, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jail != nil {
		return r.jail, nil
	}
	j := &jail{id: r.id, opts: r.opts}
	l := r.opts.Limits
	if !l.IsZero() && r.cg == nil {
		for _, n := range controllerNeeds(l) {
			cerr := &ControllerError{Controller: n.ctrl, Needed: n.why, Reason: "this run has no cgroup (POSIX mode)"}
			if !l.BestEffort {
				return nil, cerr
			}
			j.warnings = append(j.warnings, cerr)
		}
	}
	r.jail = j
	return j, nil
}

// cmdJail is what a Start needs from the jail for one worker.
type cmdJail struct {
	ready *readyState
	nnp   bool
}

// prepareCommand applies the jail settings of the run and of c to c (env,
// stdout, credentials, network namespace) before the worker is started.
func (r *Run) prepareCommand(c *Command) (*cmdJail, error) {
	j, err := r.jailOf()
	if err != nil {
		return nil, err
	}
	rn, err := j.netns()
	if err != nil {
		return nil, err
	}
	rc, err := resolveCredential(c.Credential)
	if err != nil {
		return nil, err
	}
	if rc != nil && r.cg != nil && !spawn.Clone3Supported() {
		// The pre-exec placement has the child write its own PID into
		// cgroup.procs, which an unprivileged worker cannot do.
		return nil, fmt.Errorf("--user/--group need clone3 CLONE_INTO_CGROUP, which this kernel refused")
	}
	uid, gid := -1, -1
	if rc != nil {
		uid, gid = int(rc.uid), int(rc.gid)
	}
	rs, err := newReadyState(c.Readiness, r.CgroupPath(), uid, gid)
	if err != nil {
		return nil, err
	}
	extra := rs.env()
	if rc != nil {
		extra = append(extra, rc.env...)
	}
	if len(extra) > 0 {
		env := c.Env
		if env == nil {
			env = os.Environ()
		}
		c.Env = overrideEnv(env, extra)
	}
	c.Stdout = rs.wrapStdout(c.Stdout)
	if rc != nil {
		inner := c.Modify
		c.Modify = func(cmd *exec.Cmd) {
			if inner != nil {
				inner(cmd)
			}
			cmd.SysProcAttr.Credential = rc.sysProcCredential()
		}
	}
	c.Around = rn.around(c.Around)
	return &cmdJail{ready: rs, nnp: !c.Credential.NewPrivileges}, nil
}

// abort releases what prepareCommand made when the start failed.
func (cj *cmdJail) abort() { cj.ready.cleanup() }

// closeJail closes the run's jail (Teardown).
func (r *Run) closeJail() {
	r.mu.Lock()
	j := r.jail
	r.mu.Unlock()
	j.close()
}
