//go:build linux

package snakepit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spawn"
)

// Options configure a run.
type Options struct {
	// ID is the run ID; empty generates one.
	ID string
	// CgroupParent is the absolute path of the cgroup under which the run's
	// snakepit-<id> group is made; empty means DefaultParent().
	CgroupParent string
	// Spawner forks the workers; nil uses spawn.Default().
	Spawner *spawn.Spawner
	// Reaper, when set, is the process's single wait4(-1) owner and workers
	// are waited through it. When nil each worker is waited through its own
	// pidfd (exec.Cmd.Wait), which never steals other children's statuses.
	Reaper *reaper.Reaper
	// WaitDelay bounds how long Wait keeps copying a worker's output after
	// it exits while a grandchild still holds the pipe. Zero means 2s.
	WaitDelay time.Duration
}

// DefaultParent returns <cgroup2 root>/snakepit.
func DefaultParent() (string, error) {
	m, err := cgroup.FindMount()
	if err != nil {
		return "", err
	}
	return filepath.Join(m.Path, "snakepit"), nil
}

// Run is a set of workers sharing one cgroup.
type Run struct {
	id      string
	cg      *cgroup.Group
	dir     *os.File // open cgroup dir for CLONE_INTO_CGROUP
	opts    Options
	spawner *spawn.Spawner

	mu      sync.Mutex
	closed  bool
	workers map[int]*Worker
	nextWID int
}

// Create makes a new run and its cgroup. The run ID is validated before any
// filesystem access; a taken ID yields cgroup.ErrExists.
func Create(ctx context.Context, opts Options) (*Run, error) {
	id := opts.ID
	if id == "" {
		id = runid.Generate()
	} else if err := runid.Validate(id); err != nil {
		return nil, err
	}
	parent := opts.CgroupParent
	if parent == "" {
		p, err := DefaultParent()
		if err != nil {
			return nil, err
		}
		parent = p
	}
	if !filepath.IsAbs(parent) {
		return nil, fmt.Errorf("cgroup parent %q: must be an absolute path", parent)
	}
	cg, err := cgroup.Create(parent, cgroup.Prefix+id)
	if err != nil {
		return nil, err
	}
	dir, err := cg.OpenDir()
	if err != nil {
		_ = cg.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	sp := opts.Spawner
	if sp == nil {
		sp = spawn.Default()
	}
	return &Run{id: id, cg: cg, dir: dir, opts: opts, spawner: sp, workers: make(map[int]*Worker)}, nil
}

// ID returns the run ID.
func (r *Run) ID() string { return r.id }

// Cgroup returns the run's cgroup.
func (r *Run) Cgroup() *cgroup.Group { return r.cg }

// CgroupPath returns the absolute path of the run's cgroup.
func (r *Run) CgroupPath() string { return r.cg.Path() }

// Command describes a worker to start.
type Command struct {
	// Args is the argv; Args[0] is looked up in PATH unless it contains a
	// slash.
	Args []string
	// Env is the environment; nil inherits ours. SNAKEPIT_RUN_ID is always
	// set.
	Env []string
	// Dir is the working directory; empty inherits ours.
	Dir string
	// Stdin, Stdout, Stderr are as in exec.Cmd (nil means /dev/null).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// ExtraFiles are inherited as fds 3, 4, ...
	ExtraFiles []*os.File
	// Foreground puts the worker's process group in the terminal's
	// foreground (Stdin must be the terminal).
	Foreground bool
	// Modify, if set, is applied to each fresh exec.Cmd before it starts
	// (credentials, namespaces, ...).
	Modify func(*exec.Cmd)
	// Around is passed to spawn.Options.Around.
	Around func() (undo func() error, err error)
}

// Worker is one started process of a run.
type Worker struct {
	// WID is the worker's number within the run, from 1.
	WID       int
	run       *Run
	proc      *spawn.Process
	exitc     <-chan reaper.Exit // reaper mode
	done      chan struct{}
	status    ExitStatus
	waitErr   error
	fdMu      sync.Mutex // guards proc.PidFD against Teardown closing it
	Placement spawn.Placement
}

// PID returns the worker's process ID.
func (w *Worker) PID() int { return w.proc.PID }

// PidFD returns the worker's pidfd, or -1. It stays valid until the run is
// torn down.
func (w *Worker) PidFD() int {
	w.fdMu.Lock()
	defer w.fdMu.Unlock()
	return w.proc.PidFD
}

// Done is closed when the worker has exited and been reaped.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Start starts a worker inside the run's cgroup, in its own process group,
// with Pdeathsig SIGKILL from the spawner thread.
func (r *Run) Start(ctx context.Context, c Command) (*Worker, error) {
	if len(c.Args) == 0 || c.Args[0] == "" {
		return nil, ErrNoCommand
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	r.nextWID++
	wid := r.nextWID
	r.mu.Unlock()

	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(withoutKey(env, runid.EnvVar), runid.EnvVar+"="+r.id)
	waitDelay := r.opts.WaitDelay
	if waitDelay == 0 {
		waitDelay = 2 * time.Second
	}
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(c.Args[0], c.Args[1:]...)
		cmd.Env = env
		cmd.Dir = c.Dir
		cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
		cmd.ExtraFiles = c.ExtraFiles
		cmd.WaitDelay = waitDelay
		cmd.SysProcAttr = &syscall.SysProcAttr{}
		if c.Foreground {
			cmd.SysProcAttr.Foreground = true
			cmd.SysProcAttr.Ctty = 0
		}
		if c.Modify != nil {
			c.Modify(cmd)
		}
		return cmd
	}
	so := spawn.Options{Cgroup: r.cg.Path(), CgroupDir: r.dir, Around: c.Around}

	w := &Worker{WID: wid, run: r, done: make(chan struct{})}
	var err error
	if r.opts.Reaper != nil {
		w.exitc, err = r.opts.Reaper.Subscribe(func() (int, error) {
			p, err := r.spawner.Start(ctx, newCmd, so)
			if err != nil {
				return 0, err
			}
			w.proc = p
			return p.PID, nil
		})
	} else {
		w.proc, err = r.spawner.Start(ctx, newCmd, so)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Args[0], err)
	}
	w.Placement = w.proc.Placement
	r.mu.Lock()
	r.workers[wid] = w
	r.mu.Unlock()
	go w.wait()
	return w, nil
}

func withoutKey(env []string, key string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (w *Worker) wait() {
	cmd := w.proc.Cmd
	if w.exitc != nil {
		e := <-w.exitc
		w.status = fromWaitStatus(e.Status)
		// The reaper already collected the status; Wait now fails with
		// ECHILD but still finishes the I/O goroutines (bounded by
		// WaitDelay) and closes the pipes.
		_ = cmd.Wait()
	} else {
		err := cmd.Wait()
		if cmd.ProcessState != nil {
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
				w.status = fromWaitStatus(unix.WaitStatus(ws))
			}
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
			w.waitErr = err
		}
	}
	close(w.done)
}

func fromWaitStatus(ws unix.WaitStatus) ExitStatus {
	if ws.Signaled() {
		return ExitStatus{Signal: syscall.Signal(ws.Signal())}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}

// Wait blocks until the worker exits (or ctx ends) and returns how it ended.
func (w *Worker) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-w.done:
		return w.status, w.waitErr
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the worker through its pidfd, so a recycled PID can
// never be hit.
func (w *Worker) Signal(sig syscall.Signal) error {
	select {
	case <-w.done:
		return os.ErrProcessDone
	default:
	}
	w.fdMu.Lock()
	defer w.fdMu.Unlock()
	if w.proc.PidFD >= 0 {
		err := unix.PidfdSendSignal(w.proc.PidFD, sig, nil, 0)
		if errors.Is(err, unix.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	return w.proc.Cmd.Process.Signal(sig)
}

// Workers returns the run's workers, in start order.
func (r *Run) Workers() []*Worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Worker, 0, len(r.workers))
	for i := 1; i <= r.nextWID; i++ {
		if w, ok := r.workers[i]; ok {
			out = append(out, w)
		}
	}
	return out
}

// Worker returns the worker with number wid, or nil.
func (r *Run) Worker(wid int) *Worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[wid]
}

// Teardown ends the run: SIGTERM to every process in the cgroup (setsid'd
// grandchildren too), up to grace for them to leave, then cgroup.kill, wait
// until the cgroup is empty and remove it. It is idempotent. ctx bounds the
// whole teardown; a cancelled ctx still kills (the kill itself does not
// block), but may return before the cgroup is removed.
func (r *Run) Teardown(ctx context.Context, grace time.Duration) (TeardownReport, error) {
	start := time.Now()
	var rep TeardownReport
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return rep, nil
	}
	r.closed = true
	r.mu.Unlock()

	err := teardownGroup(ctx, r.cg, grace, &rep)
	if r.dir != nil {
		r.dir.Close()
		r.dir = nil
	}
	// Workers are dead; let their wait goroutines finish so pidfds and pipes
	// are released before we return.
	for _, w := range r.Workers() {
		select {
		case <-w.done:
		case <-ctx.Done():
		}
		w.fdMu.Lock()
		if w.proc.PidFD >= 0 {
			unix.Close(w.proc.PidFD)
			w.proc.PidFD = -1
		}
		w.fdMu.Unlock()
	}
	rep.Duration = time.Since(start)
	return rep, err
}

// TeardownGroup tears down a run cgroup that this process did not create
// (snakepit kill, gc, the guardian): same sequence as Run.Teardown.
func TeardownGroup(ctx context.Context, cg *cgroup.Group, grace time.Duration) (TeardownReport, error) {
	start := time.Now()
	var rep TeardownReport
	err := teardownGroup(ctx, cg, grace, &rep)
	rep.Duration = time.Since(start)
	return rep, err
}

func teardownGroup(ctx context.Context, cg *cgroup.Group, grace time.Duration, rep *TeardownReport) error {
	if grace > 0 {
		n, err := cg.Signal(unix.SIGTERM)
		rep.Terminated = n
		if errors.Is(err, cgroup.ErrNotExist) {
			rep.Vanished = true
			return nil
		}
		if n > 0 {
			gctx, cancel := context.WithTimeout(ctx, grace)
			err = cg.WaitEmpty(gctx)
			cancel()
			if errors.Is(err, cgroup.ErrNotExist) {
				rep.Vanished = true
				return nil
			}
		}
	}
	ev, err := cg.ReadEvents()
	if errors.Is(err, cgroup.ErrNotExist) {
		rep.Vanished = true
		return nil
	}
	if err != nil {
		return err
	}
	if ev.Populated {
		rep.Killed = true
		m, err := cg.Kill(ctx)
		rep.KillMechanism = string(m)
		if errors.Is(err, cgroup.ErrNotExist) {
			rep.Vanished = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("kill %s: %w", cg.Path(), err)
		}
		if err := cg.WaitEmpty(ctx); err != nil && !errors.Is(err, cgroup.ErrNotExist) {
			return err
		}
	}
	// Removal must happen even when the caller's ctx is already done: a
	// leftover empty cgroup is a leak. It gets its own short deadline.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return cg.Remove(rctx)
}
