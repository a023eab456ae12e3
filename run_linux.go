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
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/pidns"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/posix"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spawn"
	"github.com/snakepit/snakepit/spec"
	"github.com/snakepit/snakepit/systemd"
)

// Options configure a run.
type Options struct {
	// ID is the run ID; empty generates one.
	ID string
	// CgroupParent is the absolute path of the cgroup under which the run's
	// snakepit-<id> group is made. Empty lets package placement choose:
	// under systemd, below our own unit when it is delegated to us, else
	// in a transient scope snakepit-<id>.scope per run; without systemd
	// (or with NoSystemd), cgroup.DefaultParent().
	CgroupParent string
	// NoSystemd keeps an unset CgroupParent at cgroup.DefaultParent()
	// under systemd too.
	NoSystemd bool
	// Slice is the slice of a run's transient scope; empty means our own.
	Slice string
	// Properties are further properties of a run's transient scope, as
	// systemd-run's --property: "MemoryMax=1G", "CPUQuota=50%".
	Properties []string
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
	// StopSignal is the first signal of Teardown, sent to every process of
	// the run before the grace period; zero means SIGTERM.
	StopSignal syscall.Signal
	// Guardian, if set, is recorded as the guardian already watching the
	// owner (a daemon's one guardian), in the record Create writes; Create
	// then registers the run with no guardian itself.
	Guardian *reaper.Identity
	// NoGuardian turns the guardian off: by default Create registers the
	// run with the guardian service (starting it if none runs), which
	// tears the run down when its owner dies, however it dies. Without
	// one, a SIGKILLed owner leaves the run to 'snakepit gc'.
	NoGuardian bool
	// GuardianBinary is the snakepit executable that starts the guardian
	// service when none runs; empty means $SNAKEPIT_BIN, else snakepit on
	// $PATH. The calling program itself is never used. Create fails with
	// ErrNoGuardian when no service runs and none can be started.
	GuardianBinary string
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
	// IdentityHelper, if set, is a snakepit executable through which a
	// worker whose identity changes (Credential) drops it: the forked child
	// execs the helper's __exec mode with our identity, and the helper sets
	// the user and groups and execs the command (package jail,
	// WrapIdentity). Set it in a process that the workers' users must not
	// be able to hold: with Go's vfork, a child that its user stops between
	// setuid and exec holds the spawning thread, and then every garbage
	// collection, so the whole process. It costs a process start per such
	// worker. Not used with PidNS, whose init drops the identity already.
	IdentityHelper string
	// AdoptOrphans (POSIX mode) counts every child of this process that is
	// not a worker or the guardian as the run's: orphans re-parented to us,
	// the subreaper. Only for a process that owns one run, has no other
	// children and reaps its orphans (Reaper), like snakepit run. Without
	// it or a Reaper, POSIX mode leaves orphans to init.
	AdoptOrphans bool
	// Limits are the run's resource limits (settings.go, limits_linux.go).
	Limits Limits
	// Net is the run's network namespace (netns_linux.go).
	Net Net
	// OnEvent, if set, is called with each limit event of the run (OOM
	// kills, forks refused at pids.max), from a goroutine of the run.
	OnEvent func(Event)
}

// Run is a set of workers held by one containment: a run cgroup, or in
// POSIX mode process groups and markers.
type Run struct {
	id       string
	box      containment.Containment // chosen once, at Create
	opts     Options
	spawner  *spawn.Spawner
	fallback error // why ModeAuto fell back to POSIX
	// fileRecord: the record is a file (POSIX mode, or no user xattrs on
	// this cgroupfs); Teardown removes it.
	fileRecord bool
	guard      *guardian.Guard // nil: not guarded by us (NoGuardian, Options.Guardian)

	mu      sync.Mutex
	rec     *record.Record
	limits  *limits.Run // planned, applied, its events watched
	jail    *jail.Run   // the network namespace; each worker's credentials and readiness
	closed  bool        // no more Starts: a teardown has begun
	tearing bool        // a teardown is under way
	gone    bool        // a teardown succeeded
	workers map[int]*Worker
	nextWID int
	// starting counts Starts under way (added to only while !closed):
	// Teardown waits for them, before its kill in POSIX mode and after it
	// with a cgroup (see Teardown).
	starting sync.WaitGroup
}

// Create makes a new run and its cgroup (or, in POSIX mode, its record).
// The run ID is validated before any filesystem access; a taken ID yields
// cgroup.ErrExists.
func Create(ctx context.Context, opts Options) (*Run, error) {
	// The spec's checks, whichever door the options came through: a
	// negative grace or a stop signal that is none would otherwise
	// reach the teardown.
	if err := (spec.Run{ID: opts.ID, Grace: spec.Duration(opts.Grace), StopSignal: spec.Signal(opts.StopSignal), Limits: opts.Limits, Net: opts.Net}).Validate(); err != nil {
		return nil, err
	}
	id := opts.ID
	if id == "" {
		id = runid.Generate()
	} else if err := inventory.Free(id, opts.CgroupParent); err != nil {
		// Generated IDs are not checked: 36^7 of them make a collision
		// a non-event.
		return nil, err
	}
	switch opts.Mode {
	case ModePOSIX:
		return createPOSIX(ctx, id, opts, nil)
	case ModeAuto, ModeCgroup:
	default:
		return nil, fmt.Errorf("%w: %q", ErrBadMode, string(opts.Mode))
	}
	if opts.CgroupParent != "" {
		if !filepath.IsAbs(opts.CgroupParent) {
			return nil, fmt.Errorf("%w: %q: must be an absolute path", ErrBadParent, opts.CgroupParent)
		}
		if !cgroup.InCgroup2(opts.CgroupParent) {
			// Checked before anything is made: MkdirAll would create
			// the path on whatever filesystem it names.
			return nil, fmt.Errorf("%w: %q is not inside a cgroup2 mount", ErrBadParent, opts.CgroupParent)
		}
	}
	req := placement.Request{Parent: opts.CgroupParent, NoSystemd: opts.NoSystemd, Slice: opts.Slice}
	for _, p := range opts.Properties {
		prop, err := systemd.ParseProperty(p)
		if err != nil {
			return nil, err
		}
		req.Properties = append(req.Properties, prop)
	}
	plan, err := placement.Decide(req)
	if err != nil {
		if fallsBack(opts.Mode, err) {
			return createPOSIX(ctx, id, opts, err)
		}
		return nil, err
	}
	// From here on, a failure undoes what the placement made (a scope).
	parent, err := plan.Prepare(ctx, id, placement.Options{Reaper: opts.Reaper})
	if err != nil {
		if fallsBack(opts.Mode, err) {
			return createPOSIX(ctx, id, opts, err)
		}
		return nil, err
	}
	runPath := filepath.Join(parent, cgroup.Prefix+id)
	unplace := func() { _ = placement.ReleaseScope(context.WithoutCancel(ctx), runPath) }
	r, err := createCgroup(ctx, id, parent, opts)
	if err != nil {
		unplace()
		if fallsBack(opts.Mode, err) {
			return createPOSIX(ctx, id, opts, err)
		}
		return nil, err
	}
	return r, nil
}

// createCgroup makes the run cgroup parent/snakepit-<id>, its record, its
// limits and its guardian registration.
func createCgroup(ctx context.Context, id, parent string, opts Options) (*Run, error) {
	g, err := connectGuardian(ctx, &opts, parent)
	if err != nil {
		return nil, err
	}
	if gid := g.Identity(); gid.PID != 0 {
		opts.Guardian = &gid
	}
	rec, err := record.New(id, record.MechanismCgroup, opts.Owner, opts.Grace, filepath.Join(parent, cgroup.Prefix+id), opts.Guardian)
	if err != nil {
		return nil, err
	}
	// Limits and a named network namespace are checked before anything
	// is created.
	lim, err := limits.ForRun(id, parent, opts.Limits, opts.OnEvent)
	if err != nil {
		return nil, err
	}
	j, err := jail.NewRun(opts.Net)
	if err != nil {
		return nil, err
	}
	cg, err := cgroup.Create(parent, cgroup.Prefix+id)
	if err != nil {
		return nil, err
	}
	// The ownership record is on the cgroup before any worker can start.
	fileRecord, err := record.WriteCgroup(cg.Path(), rec)
	if err != nil {
		_ = cg.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	undo := func() {
		_ = cg.Remove(context.WithoutCancel(ctx))
		if fileRecord {
			_ = record.Remove(id)
		}
	}
	box, err := containment.NewCgroup(cg)
	if err != nil {
		undo()
		return nil, err
	}
	box.StopSignal = opts.StopSignal
	if err := lim.Apply(cg); err != nil {
		lim.Stop()
		_, _ = box.Teardown(context.WithoutCancel(ctx), 0)
		undo()
		return nil, err
	}
	// Registered before any worker can start: from here on, the owner's
	// death tears the run down.
	if err := registerGuardian(ctx, g, id, cg.Path(), rec.Owner); err != nil {
		lim.Stop()
		_, _ = box.Teardown(context.WithoutCancel(ctx), 0)
		undo()
		return nil, err
	}
	return &Run{id: id, box: box, opts: opts, spawner: spawnerOf(opts), rec: rec, fileRecord: fileRecord, limits: lim, jail: j, guard: g, workers: make(map[int]*Worker)}, nil
}

// fallsBack reports whether a failure to set up the run cgroup lets mode
// fall back to POSIX: only in ModeAuto, and only for "cgroup2 is not
// usable here" (none mounted, or the cgroupfs refused us).
func fallsBack(mode Mode, err error) bool {
	return mode == ModeAuto && (errors.Is(err, cgroup.ErrNoCgroup2) || errors.Is(err, cgroup.ErrPermission) || errors.Is(err, placement.ErrNoScope))
}

// createPOSIX makes a run without a cgroup (package posix). reason is why
// (nil when ModePOSIX was asked for).
func createPOSIX(ctx context.Context, id string, opts Options, reason error) (*Run, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lim, err := limits.ForRunWithoutCgroup(opts.Limits)
	if err != nil {
		return nil, err
	}
	j, err := jail.NewRun(opts.Net)
	if err != nil {
		return nil, err
	}
	g, err := connectGuardian(ctx, &opts, "")
	if err != nil {
		return nil, err
	}
	if gid := g.Identity(); gid.PID != 0 {
		opts.Guardian = &gid
	}
	rec, err := record.New(id, record.MechanismPOSIX, opts.Owner, opts.Grace, "", opts.Guardian)
	if err != nil {
		return nil, err
	}
	if old, err := record.Read(id); err == nil {
		if alive, why := old.Owner.Check(); alive {
			return nil, fmt.Errorf("%w: POSIX run %s has a live owner (%s)", cgroup.ErrExists, id, why)
		}
	}
	// Orphans of the run come to us (not to init), so that they can be
	// found as our children: only when something here reaps them. Without
	// a Reaper, those that exited before the teardown would stay zombies
	// for as long as this process lives.
	if opts.Reaper != nil || opts.AdoptOrphans {
		if err := reaper.SetSubreaper(); err != nil {
			return nil, fmt.Errorf("POSIX mode: become subreaper: %w", err)
		}
	}
	if err := record.Write(rec); err != nil {
		return nil, fmt.Errorf("POSIX mode: write run record (set %s to a writable directory): %w", record.DirEnv, err)
	}
	if err := registerGuardian(ctx, g, id, "", rec.Owner); err != nil {
		_ = record.Remove(id)
		return nil, err
	}
	r := &Run{id: id, opts: opts, spawner: spawnerOf(opts), rec: rec, fileRecord: true, limits: lim, jail: j, guard: g,
		workers: make(map[int]*Worker), fallback: reason}
	r.box = posix.New(posix.Options{
		RunID:        id,
		AdoptOrphans: opts.AdoptOrphans,
		Created:      rec.Created,
		StopSignal:   opts.StopSignal,
		Guardian: func() int {
			// The service we are connected to now: should the first die,
			// we start its successor, a child of ours, not of the run.
			if id := g.Current(); id.PID > 0 {
				return id.PID
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if g := r.rec.Guardian; g != nil {
				return g.PID
			}
			return 0
		},
		OnFirstGroup: func(pgid int, leaderStart uint64, sid int) {
			r.mu.Lock()
			r.rec.PGID, r.rec.PGIDStart, r.rec.SID = pgid, leaderStart, sid
			rec := *r.rec
			r.mu.Unlock()
			_ = record.Write(&rec) // best effort: the live run does not need it
		},
	})
	return r, nil
}

func spawnerOf(opts Options) *spawn.Spawner {
	if opts.Spawner != nil {
		return opts.Spawner
	}
	return spawn.Default()
}

// ID returns the run ID.
func (r *Run) ID() string { return r.id }

// Cgroup returns the run's cgroup (nil in POSIX mode).
func (r *Run) Cgroup() *cgroup.Group { return r.box.Group() }

// CgroupPath returns the absolute path of the run's cgroup ("" in POSIX
// mode).
func (r *Run) CgroupPath() string {
	if g := r.box.Group(); g != nil {
		return g.Path()
	}
	return ""
}

// Mechanism says how the run is contained: "cgroup" or "posix".
func (r *Run) Mechanism() string { return r.box.Mechanism() }

// Fallback returns why a ModeAuto run uses POSIX mode (the error that made
// the cgroup unusable), or nil.
func (r *Run) Fallback() error { return r.fallback }

// Record returns a copy of the run's ownership record.
func (r *Run) Record() record.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.rec
}

// Stats reads the run cgroup's usage counters.
func (r *Run) Stats() (Stats, error) {
	g := r.box.Group()
	if g == nil {
		return Stats{}, fmt.Errorf("run %s: no cgroup (POSIX mode): no statistics", r.id)
	}
	return limits.ReadStats(g)
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
	// and sets no_new_privs.
	Credential Credential
	// Readiness says when the worker counts as ready.
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
	ready     *jail.Ready
	jobs      *pidns.JobControl // --pid-ns on a terminal (jobs_linux.go)
	// stdinW is the write end of our pipe for a Stdin that is not a
	// file, closed once the worker is reaped (stdinPipe).
	stdinW *os.File

	exitMu sync.Mutex
	onExit []func() // AfterExit's, until the worker has exited
	exited bool
}

// PID returns the worker's process ID.
func (w *Worker) PID() int { return w.proc.PID }

// PidFD returns the worker's pidfd, or -1. It is closed once the worker
// has been reaped.
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

	// Credentials, network namespace, readiness.
	jc := jail.Command{Env: c.Env, Stdout: c.Stdout, Modify: c.Modify, Around: c.Around, Credential: c.Credential, Readiness: c.Readiness}
	ready, nnp, err := r.jail.Prepare(&jc, r.CgroupPath())
	if err != nil {
		return nil, err
	}
	c.Env, c.Stdout, c.Modify, c.Around = jc.Env, jc.Stdout, jc.Modify, jc.Around
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	env = RunEnv(env, r.id)
	waitDelay := r.opts.WaitDelay
	if waitDelay == 0 {
		waitDelay = 2 * time.Second
	}
	// The init's job-control socket (--pid-ns on a terminal); ours goes to
	// the Worker.
	var jb *pidns.JobControl
	var initJobs *os.File
	if c.Foreground && r.opts.PidNS {
		if jb, initJobs, err = pidns.NewJobControl(); err != nil {
			ready.Cleanup()
			return nil, err
		}
		defer initJobs.Close() // the init has its copy
	}
	// The helper's report pipe of the latest cmd (IdentityHelper).
	var helperR, helperW *os.File
	defer func() {
		if helperW != nil {
			helperW.Close() // the child has its copy
		}
	}()
	stdin, stdinR, stdinW, err := stdinPipe(c.Stdin)
	if err != nil {
		jb.Close()
		ready.Cleanup()
		return nil, err
	}
	if stdinR != nil {
		defer stdinR.Close() // the child has its copy
	}
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(c.Args[0], c.Args[1:]...)
		cmd.Env = env
		cmd.Dir = c.Dir
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, c.Stdout, c.Stderr
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
		r.wrapCmd(cmd, initJobs) // --pid-ns
		if h := r.opts.IdentityHelper; h != "" && !r.opts.PidNS {
			if helperR != nil {
				helperR.Close() // a retry's fresh cmd: a fresh pipe
				helperW.Close()
				helperR, helperW = nil, nil
			}
			var err error
			if helperR, helperW, err = jail.WrapIdentity(cmd, h); err != nil {
				cmd.Err = err
			}
		}
		return cmd
	}
	so := spawn.Options{Around: c.Around, NoNewPrivs: nnp}
	r.box.Place(&so)

	w := &Worker{WID: wid, run: r, done: make(chan struct{}), ready: ready, jobs: jb, stdinW: stdinW}
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
	if helperW != nil {
		helperW.Close()
		helperW = nil
	}
	if err != nil {
		if helperR != nil {
			helperR.Close()
		}
		if stdinW != nil {
			stdinW.Close()
		}
		jb.Close()
		ready.Cleanup()
		r.mu.Lock()
		closed := r.closed
		r.mu.Unlock()
		gerr := r.box.Gone()
		if closed && (gerr != nil || errors.Is(err, os.ErrClosed)) {
			// Torn down meanwhile: the cgroup was removed, or its
			// directory closed, before the clone.
			return nil, fmt.Errorf("start %s: %w: %w", c.Args[0], ErrClosed, err)
		}
		if gerr != nil {
			// clone3 into a removed cgroup fails with ENOENT, which would
			// read as "program not found".
			return nil, fmt.Errorf("start %s: %w", c.Args[0], gerr)
		}
		return nil, fmt.Errorf("start %s: %w", c.Args[0], err)
	}
	w.Placement = w.proc.Placement
	r.mu.Lock()
	r.workers[wid] = w
	r.mu.Unlock()
	r.box.Adopt(w.PID(), w.PidFD())
	ready.Started()
	if stdinW != nil {
		go copyStdin(stdinW, c.Stdin)
	}
	go w.wait()
	if helperR != nil {
		if err := jail.AwaitExec(ctx, helperR); err != nil {
			// The helper could not become the command: it exits after
			// its report; collect it (its wait releases what it held).
			w.kill()
			select {
			case <-w.done:
			case <-ctx.Done():
			}
			return nil, fmt.Errorf("start %s: %w", c.Args[0], err)
		}
	}
	return w, nil
}

// stdinPipe returns what a worker's stdin is: in itself when it is a file
// (or nil), else the read end r of a pipe whose write end w copyStdin
// feeds. os/exec would make that pipe and copy too, but its Wait waits for
// the copy, which blocks in the caller's Read as long as the reader does
// not end (an io.Pipe never closed): Wait and Teardown hung with the
// worker long dead. Ours is abandoned once the worker is reaped.
func stdinPipe(in io.Reader) (stdin io.Reader, r, w *os.File, err error) {
	if _, ok := in.(*os.File); ok || in == nil {
		return in, nil, nil, nil
	}
	if r, w, err = os.Pipe(); err != nil {
		return nil, nil, nil, err
	}
	return r, r, w, nil
}

// copyStdin copies in to the worker's stdin pipe w until in ends (then
// closes w: EOF for the worker) or w is closed.
func copyStdin(w *os.File, in io.Reader) {
	_, _ = io.Copy(w, in)
	_ = w.Close()
}

// RunEnv returns env with SNAKEPIT_RUN_ID set to id, replacing any value
// inherited from an outer run (getenv returns the first of duplicates).
func RunEnv(env []string, id string) []string {
	return jail.OverrideEnv(env, []string{runid.EnvVar + "=" + id})
}

// wrapCmd applies the run's PID-namespace setting to a fresh exec.Cmd;
// jobs is the init's end of its job-control socket, or nil.
func (r *Run) wrapCmd(cmd *exec.Cmd, jobs *os.File) {
	if !r.opts.PidNS {
		return
	}
	grace := r.opts.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	pidns.Wrap(cmd, pidns.Options{InitPath: r.opts.InitPath, Grace: grace, UserNS: pidns.UserNSNeeded(), JobControl: jobs})
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
		awaitExit(w.PidFD())
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
	// Reaped: its pidfd and the run's entry go now, not at teardown, so a
	// long-lived run that restarts its workers holds no descriptor per
	// exited worker; nor its Cmd (argv, environment). The Worker keeps its
	// status for Wait.
	w.fdMu.Lock()
	if w.proc.PidFD >= 0 {
		unix.Close(w.proc.PidFD)
		w.proc.PidFD = -1
	}
	w.proc.Cmd = nil
	w.fdMu.Unlock()
	if w.stdinW != nil {
		w.stdinW.Close() // the copy's next write fails; nobody waits for it
	}
	if w.ready != nil {
		w.ready.Exited() // its notify socket is gone before anyone sees done
	}
	w.jobs.Close()
	close(w.done)
	w.run.mu.Lock()
	delete(w.run.workers, w.WID)
	w.run.mu.Unlock()
	w.exitMu.Lock()
	fs := w.onExit
	w.onExit, w.exited = nil, true
	w.exitMu.Unlock()
	for _, f := range fs {
		f()
	}
}

// AfterExit calls f once the worker has exited and been reaped (Done is
// closed, Wait returns at once), on the goroutine that waited for it, or
// at once on the caller's if that already happened. f must not block for
// long. A supervisor that tracks many workers needs no goroutine of its own
// per worker for this.
func (w *Worker) AfterExit(f func()) {
	w.exitMu.Lock()
	if !w.exited {
		w.onExit = append(w.onExit, f)
		w.exitMu.Unlock()
		return
	}
	w.exitMu.Unlock()
	f()
}

// awaitExit returns once the process behind pidfd (-1: none) has exited.
// It waits in the runtime's poller: cmd.Wait's blocking waitid held an OS
// thread for each running worker (50 sleeping workers, 55 threads), and
// its reap then finds the process exited.
func awaitExit(pidfd int) {
	if pidfd < 0 {
		return
	}
	fd, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return // cmd.Wait waits instead
	}
	f := reaper.PidfdFile(fd, "worker pidfd")
	defer f.Close()
	reaper.WaitPidfd(f)
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

// kill SIGKILLs a worker that has not exited, through its pidfd (never a
// recycled PID), and reports whether it had to.
func (w *Worker) kill() bool {
	select {
	case <-w.done:
		return false
	default:
	}
	w.fdMu.Lock()
	defer w.fdMu.Unlock()
	if w.proc.PidFD < 0 {
		return false
	}
	if reaper.PidfdExited(w.proc.PidFD, 0) {
		return false // exited, not yet reaped
	}
	return unix.PidfdSendSignal(w.proc.PidFD, unix.SIGKILL, nil, 0) == nil
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
	if w.proc.Cmd == nil {
		return os.ErrProcessDone
	}
	return w.proc.Cmd.Process.Signal(sig)
}

// Workers returns the run's workers that have not been reaped yet, in
// start order (an exited worker keeps its status: Worker.Wait).
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

// Worker returns the running worker with number wid, or nil.
func (r *Run) Worker(wid int) *Worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[wid]
}

// killTimeout bounds a teardown's kill, wait and removal once the caller's
// ctx has ended: killed processes exit in milliseconds, unless stuck in the
// kernel (D state), when a later Teardown tries again.
const killTimeout = 10 * time.Second

// Teardown ends the run through its containment: for a run cgroup,
// SIGTERM to every process in it (setsid'd grandchildren too), up to grace
// for them to leave, then cgroup.kill, wait until the cgroup is empty and
// remove it (package containment); in POSIX mode the same through pidfds
// (package posix). ctx bounds the grace period: once it ends, the rest
// (kill, wait until empty, remove) still happens, under a bound of its own
// (killTimeout). Once it has succeeded Teardown does nothing; a call while
// another is under way returns at once; after a failure a call tries again.
func (r *Run) Teardown(ctx context.Context, grace time.Duration) (rep TeardownReport, err error) {
	start := time.Now()
	r.mu.Lock()
	if r.gone || r.tearing {
		r.mu.Unlock()
		return TeardownReport{}, nil
	}
	first := !r.closed
	r.closed, r.tearing = true, true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.tearing, r.gone = false, err == nil
		r.mu.Unlock()
	}()
	if first {
		r.limits.Stop() // a last look at the limit events, while the cgroup exists
	}
	// A run cgroup's teardown copes with a worker that a Start under way
	// clones into it meanwhile (it kills until the cgroup stays empty, and
	// a removed cgroup refuses the clone), so it comes first: a start stuck
	// before exec (its child stopped or frozen there) ends by the kill
	// instead of holding the teardown. Without a cgroup, a worker started
	// after the last walk of /proc would escape: the starts finish first.
	if r.box.Group() == nil {
		r.starting.Wait()
	}
	rep, err = r.box.Teardown(ctx, grace)
	if err != nil && ctx.Err() != nil {
		// The caller's ctx cut the grace short; what is left is killed
		// without it: a teardown that gave up would leave processes (or
		// an empty cgroup) behind for as long as this process lives.
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		krep, kerr := r.box.Teardown(kctx, 0)
		cancel()
		rep.Terminated += krep.Terminated
		rep.Killed = rep.Killed || krep.Killed
		if krep.KillMechanism != "" {
			rep.KillMechanism = krep.KillMechanism
		}
		rep.Vanished = rep.Vanished || krep.Vanished
		if err = kerr; err != nil {
			err = fmt.Errorf("kill after the caller's context ended: %w", err)
		}
	}
	r.starting.Wait() // their workers are in r.workers now
	if first {
		r.jail.Close() // drop the network namespace, which no start uses now
	}
	if err == nil && r.fileRecord {
		err = record.Remove(r.id)
	}
	// A worker still alive now left its containment (root may move itself
	// out of the run cgroup): its pidfd still names it, whatever it did.
	for _, w := range r.Workers() {
		if w.kill() {
			rep.Escaped++
		}
	}
	if err == nil {
		r.guard.Unregister(r.id, r.CgroupPath())
	}
	// Workers are dead; let their wait goroutines finish so pidfds and pipes
	// are released before we return.
	wctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), killTimeout)
		defer cancel()
	}
	for _, w := range r.Workers() {
		select {
		case <-w.done:
		case <-wctx.Done():
		}
		w.ready.Finish(wctx) // notify socket closed and removed
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

// Warnings returns what Create had to leave out under
// Limits.BestEffort (one *ControllerError per missing controller).
func (r *Run) Warnings() []error { return r.limits.Warnings() }

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
