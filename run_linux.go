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
	"strings"
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
	// Owner is recorded as the run's owner (see Record); the zero value
	// means the calling process. A PID without Start is read from /proc.
	Owner Owner
	// Grace is recorded as the grace period the owner will tear down with.
	Grace time.Duration
	// Guardian, if set, is recorded as the guardian already watching the
	// owner (a daemon's one guardian), in the record Create writes: one
	// write instead of Create's plus SetGuardian's.
	Guardian *reaper.Identity
	// Mode selects cgroup or POSIX containment (mode.go); zero is ModeAuto.
	Mode Mode
	// PidNS starts every worker as the child of a minimal init (the
	// snakepit binary's __init mode) in a new PID namespace: when the init
	// dies (Pdeathsig when we die) the kernel kills the whole namespace.
	// Without root a user namespace is made too. See package pidns.
	PidNS bool
	// InitPath is the snakepit binary used as that init; empty means
	// /proc/self/exe: right for the CLI, and for a program that calls
	// pidns.RunIfInit() first thing in its main.
	InitPath string
	// AdoptOrphans (POSIX mode) counts every child of this process that is
	// not a worker or the guardian as the run's: orphans re-parented to us,
	// the subreaper. Only for a process that owns one run and has no other
	// children, like snakepit run.
	AdoptOrphans bool
	// Limits are the run's resource limits (settings.go, limits_linux.go).
	Limits Limits
	// Net is the run's network namespace (netns_linux.go).
	Net Net
	// OnEvent, if set, is called with each limit event of the run (OOM
	// kills, forks refused at pids.max), from a goroutine of the run.
	OnEvent func(Event)
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

	posix    *posixRun // non-nil in POSIX mode (posix_linux.go); cg is nil then
	fallback error     // why ModeAuto fell back to POSIX
	// fileRecord: the record went to a file (no user xattrs on this
	// cgroupfs); Teardown removes it with the cgroup.
	fileRecord bool

	mu      sync.Mutex
	rec     *Record // ownership record (record_linux.go)
	jail    *jail   // limits, events, netns (jail_linux.go)
	closed  bool
	workers map[int]*Worker
	nextWID int
	// starting counts Starts under way (added to only while !closed):
	// Teardown waits for them before it kills, so a worker whose spawn
	// began before the teardown cannot join the cgroup after the kill.
	starting sync.WaitGroup
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
	if opts.Mode == ModePOSIX {
		return createPOSIX(ctx, id, opts, nil)
	} else if opts.Mode != ModeAuto && opts.Mode != ModeCgroup {
		return nil, fmt.Errorf("%w: %q", ErrBadMode, string(opts.Mode))
	}
	parent := opts.CgroupParent
	if parent == "" {
		p, err := DefaultParent()
		if err != nil {
			if fallsBack(opts.Mode, err) {
				return createPOSIX(ctx, id, opts, err)
			}
			return nil, err
		}
		parent = p
	}
	if !filepath.IsAbs(parent) {
		return nil, fmt.Errorf("%w: %q: must be an absolute path", ErrBadParent, parent)
	}
	if opts.CgroupParent != "" && !cgroup.InCgroup2(parent) {
		// Checked before anything is made: MkdirAll would create the
		// path on whatever filesystem it names.
		return nil, fmt.Errorf("%w: %q is not inside a cgroup2 mount", ErrBadParent, parent)
	}
	rec, err := newRecord(id, opts, filepath.Join(parent, cgroup.Prefix+id))
	if err != nil {
		return nil, err
	}
	// Limits are checked and planned before anything is created.
	j, err := prepareJail(id, parent, opts)
	if err != nil {
		return nil, err
	}
	cg, err := cgroup.Create(parent, cgroup.Prefix+id)
	if err != nil {
		if fallsBack(opts.Mode, err) {
			return createPOSIX(ctx, id, opts, err)
		}
		return nil, err
	}
	// The ownership record is on the cgroup before any worker can start.
	fileRecord, err := writeCgroupRecord(cg.Path(), rec)
	if err != nil {
		_ = cg.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	undo := func() {
		_ = cg.Remove(context.WithoutCancel(ctx))
		if fileRecord {
			_ = RemoveRecord(id)
		}
	}
	dir, err := cg.OpenDir()
	if err != nil {
		undo()
		return nil, err
	}
	if err := j.apply(cg); err != nil {
		j.close()
		dir.Close()
		undo()
		return nil, err
	}
	sp := opts.Spawner
	if sp == nil {
		sp = spawn.Default()
	}
	return &Run{id: id, cg: cg, dir: dir, opts: opts, spawner: sp, rec: rec, fileRecord: fileRecord, jail: j, workers: make(map[int]*Worker)}, nil
}

// ID returns the run ID.
func (r *Run) ID() string { return r.id }

// Cgroup returns the run's cgroup.
func (r *Run) Cgroup() *cgroup.Group { return r.cg }

// CgroupPath returns the absolute path of the run's cgroup ("" in POSIX
// mode).
func (r *Run) CgroupPath() string {
	if r.cg == nil {
		return ""
	}
	return r.cg.Path()
}

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
	// Credential is who the worker runs as; the zero value keeps our user
	// and sets no_new_privs (cred_linux.go).
	Credential Credential
	// Readiness says when the worker counts as ready (ready_linux.go).
	Readiness Readiness
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
	ready     *readyState // ready_linux.go
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
	r.starting.Add(1)
	r.mu.Unlock()
	defer r.starting.Done() // after the worker is in r.workers

	jc, err := r.prepareCommand(&c) // credentials, netns, readiness (jail_linux.go)
	if err != nil {
		return nil, err
	}
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	env = RunEnv(env, r.id)
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
		r.wrapCmd(cmd) // --pid-ns (posix_linux.go)
		return cmd
	}
	so := spawn.Options{Around: c.Around, NoNewPrivs: jc.nnp}
	if r.cg != nil {
		so.Cgroup, so.CgroupDir = r.cg.Path(), r.dir
	}

	w := &Worker{WID: wid, run: r, done: make(chan struct{}), ready: jc.ready}
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
		jc.abort()
		if gerr := r.cgroupGone(); gerr != nil {
			// clone3 into a removed cgroup fails with ENOENT, which would
			// read as "program not found" (owner_linux.go).
			return nil, fmt.Errorf("start %s: %w", c.Args[0], gerr)
		}
		return nil, fmt.Errorf("start %s: %w", c.Args[0], err)
	}
	w.Placement = w.proc.Placement
	r.mu.Lock()
	r.workers[wid] = w
	r.mu.Unlock()
	r.noteWorker(w) // POSIX mode: a root of the run's tree (posix_linux.go)
	jc.ready.started(w.done)
	go w.wait()
	return w, nil
}

// RunEnv returns env with SNAKEPIT_RUN_ID set to id, replacing any value
// inherited from an outer run (getenv returns the first of duplicates).
func RunEnv(env []string, id string) []string {
	return append(withoutKey(env, runid.EnvVar), runid.EnvVar+"="+id)
}

// overrideEnv returns env with each KEY=value of extra replacing any
// KEY= already there.
func overrideEnv(env, extra []string) []string {
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		env = withoutKey(env, k)
	}
	return append(env, extra...)
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
		// A failed Wait keeps os.Process's own pidfd (a dup of ours) open
		// until the garbage collector runs; release it now.
		_ = cmd.Process.Release()
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
	r.starting.Wait()

	r.closeJail() // last look at limit events; drop the netns (jail_linux.go)
	var err error
	if r.posix != nil {
		err = r.teardownPOSIX(ctx, grace, &rep) // posix_linux.go
	} else {
		err = teardownGroup(ctx, r.cg, grace, &rep)
		if err == nil && r.fileRecord {
			err = RemoveRecord(r.id)
		}
	}
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
		w.ready.finish(ctx) // notify socket closed and removed (ready_linux.go)
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
	return teardownGroupSeen(ctx, cg, grace, rep, nil)
}

// teardownGroupSeen is teardownGroup for a caller that has just read the
// group's cgroup.events itself (seen; nil when it has not).
func teardownGroupSeen(ctx context.Context, cg *cgroup.Group, grace time.Duration, rep *TeardownReport, seen *cgroup.Events) error {
	// The common end of a run: its last process has exited already. One
	// read of cgroup.events skips the SIGTERM pass (two cgroup.procs
	// walks) and the kill, and goes straight to removal (which still
	// copes with a process that joined meanwhile: rmdir says EBUSY).
	var ev cgroup.Events
	var err error
	if seen != nil {
		ev = *seen
	} else {
		ev, err = cg.ReadEvents()
	}
	if errors.Is(err, cgroup.ErrNotExist) {
		rep.Vanished = true
		return nil
	}
	if err == nil && !ev.Populated {
		err := cg.RemoveOnce()
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		// A process joined since: kill it like any other.
		grace = 0
	}
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
	ev, err = cg.ReadEvents()
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
	return removeGroup(ctx, cg)
}

// removeGroup removes an emptied run cgroup. Removal must happen even when
// the caller's ctx is already done: a leftover empty cgroup is a leak. It
// gets its own short deadline.
func removeGroup(ctx context.Context, cg *cgroup.Group) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return cg.Remove(rctx)
}
