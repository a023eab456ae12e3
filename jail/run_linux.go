//go:build linux

package jail

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"

	"github.com/snakepit/snakepit/spawn"
	"github.com/snakepit/snakepit/spec"
)

// ErrNeedsClone3 means a worker with another user cannot be placed in its
// run cgroup: without clone3 CLONE_INTO_CGROUP the child writes its own PID
// into cgroup.procs, which an unprivileged worker cannot do.
var ErrNeedsClone3 = errors.New("--user/--group need clone3 CLONE_INTO_CGROUP, which this kernel refused")

// Run is the jail of one run: its network namespace, opened at the first
// worker's start and dropped at teardown (Close), and what each worker's
// command gets from the jail (Prepare).
type Run struct {
	net spec.Net

	mu     sync.Mutex
	ns     *Netns
	nsErr  error
	nsSet  bool
	closed bool
}

// NewRun makes the jail of a run whose workers get network net (already
// validated). A named namespace that does not exist fails here, before
// the run is made; it is opened again at the first Start.
func NewRun(net spec.Net) (*Run, error) {
	if net.Mode == spec.NetNamed {
		if err := CheckNamed(net.Name); err != nil {
			return nil, err
		}
	}
	return &Run{net: net}, nil
}

// netns returns the run's network namespace, opening or creating it on the
// first call.
func (j *Run) netns() (*Netns, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	if !j.nsSet {
		j.ns, j.nsErr = OpenNet(j.net)
		j.nsSet = true
	}
	return j.ns, j.nsErr
}

// Close drops the run's handle on its network namespace; a Prepare after
// it fails with ErrClosed.
func (j *Run) Close() {
	if j == nil {
		return
	}
	j.mu.Lock()
	j.closed = true
	j.ns.Close()
	j.mu.Unlock()
}

// Command is what the jail reads and sets on one worker's command before
// it starts.
type Command struct {
	// Env is the worker's environment (nil: ours); Prepare adds the
	// readiness and user variables.
	Env []string
	// Stdout is the worker's stdout; Prepare puts the line-readiness
	// watcher in front of it.
	Stdout io.Writer
	// Modify is applied to each fresh exec.Cmd; Prepare chains the
	// credentials after it.
	Modify func(*exec.Cmd)
	// Around is the spawner's hook; Prepare wraps the namespace's switch
	// around it.
	Around func() (undo func() error, err error)

	Credential spec.Credential
	Readiness  spec.Readiness
}

// Prepare applies the run's jail and c's own settings (credentials,
// network namespace, readiness) to c for a worker of the run cgroup at
// cgroupPath ("" for a run without one). It returns the worker's
// readiness, which the caller cleans up should the start fail, and
// whether the worker gets no_new_privs.
func (j *Run) Prepare(c *Command, cgroupPath string) (ready *Ready, noNewPrivs bool, err error) {
	rn, err := j.netns()
	if err != nil {
		return nil, false, err
	}
	rc, err := Resolve(c.Credential)
	if err != nil {
		return nil, false, err
	}
	if rc != nil && cgroupPath != "" && !spawn.Clone3Supported() {
		return nil, false, ErrNeedsClone3
	}
	uid, gid := -1, -1
	if rc != nil {
		uid, gid = rc.UID(), rc.GID()
	}
	rs, err := NewReady(c.Readiness, cgroupPath, uid, gid)
	if err != nil {
		return nil, false, err
	}
	extra := rs.Env()
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	if rc != nil {
		extra = append(extra, UserEnv(env, rc.Env())...)
	}
	if len(extra) > 0 {
		c.Env = OverrideEnv(env, extra)
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
	return rs, !c.Credential.NewPrivileges, nil
}
