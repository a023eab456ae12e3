//go:build linux

package spawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"
)

// Spawner forks children from locked OS threads of its own. It starts
// with one and adds another (up to MaxThreads) whenever every thread is
// busy: a start waits for its child's exec, and a child stopped before
// exec (SIGSTOP from its own user) holds that thread until the child dies,
// so one caller's stuck start must not hold up the others'. Threads are
// never ended while the Spawner is open (Pdeathsig).
type Spawner struct {
	reqs   chan func()
	mu     sync.RWMutex // write-held only by Close, which closes reqs
	closed bool
	loops  sync.WaitGroup // running threads; Close waits for them
	// started starts the first thread on first use (run): with
	// no_new_privs, the CLI's default, every child comes from the
	// companion, and a thread made for nothing costs a clone and a
	// scheduler hand-off at every `snakepit run`.
	started sync.Once
	tmu     sync.Mutex // guards threads
	threads int
	// initThread, if set, runs first on every new thread (the companion
	// sets no_new_privs); a thread whose init fails is parked.
	initThread func() error

	// broken is set when an Around undo failed: the thread is in an unknown
	// state (nnp_linux.go).
	broken atomic.Pointer[error]
	// pinned threads are never handed back to the scheduler (their state
	// was changed for good, e.g. no_new_privs); Close parks them instead.
	pinned bool
	nnpMu  sync.Mutex
	nnp    *Spawner // companion with no_new_privs set, made on first use
}

// MaxThreads bounds the threads of one Spawner: that many starts stuck
// at once make the next one wait (for its context) until one ends.
const MaxThreads = 32

// New makes a Spawner; its first thread starts on first use.
func New() *Spawner {
	return &Spawner{reqs: make(chan func())}
}

// run starts the Spawner's first thread unless it is running already.
func (s *Spawner) run() error {
	var err error
	s.started.Do(func() { err = s.grow() })
	return err
}

// grow starts one more thread unless MaxThreads run already, and returns
// once it is ready to receive.
func (s *Spawner) grow() error {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.threads >= MaxThreads {
		return nil
	}
	ready := make(chan error, 1)
	s.loops.Add(1)
	go s.loop(ready)
	if err := <-ready; err != nil {
		return err
	}
	s.threads++
	return nil
}

// loop serves requests on a locked thread. Threads are kept, idle or not,
// until Close: one handed back to the scheduler lives on, but a goroutine
// that later locks it and exits locked (as a member's file open does)
// ends it, and its children's Pdeathsig would fire.
func (s *Spawner) loop(ready chan error) {
	defer s.loops.Done()
	// Never unlocked while children may exist: a goroutine that exits while
	// locked terminates its thread, which would fire Pdeathsig. Close unlocks
	// before returning so the thread goes back to the pool and lives on.
	runtime.LockOSThread()
	if s.initThread != nil {
		if err := s.initThread(); err != nil {
			ready <- err
			// Its state is unknown: parked, never reused nor ended.
			s.loops.Done()
			select {}
		}
	}
	ready <- nil
	for f := range s.reqs {
		f()
		if s.Err() != nil {
			// This thread (or a sibling) could not be restored: park it.
			break
		}
	}
	if s.pinned || s.Err() != nil {
		// Handing this thread back would let any goroutine run in its
		// changed state; ending it would fire its children's Pdeathsig.
		// It stays parked for the life of the process.
		s.loops.Done()
		select {}
	}
	runtime.UnlockOSThread()
}

var (
	defaultMu sync.Mutex
	defaultSp *Spawner
)

// Default returns the process-wide Spawner, started on first use. It is
// never closed, so its thread outlives every child it starts. Should its
// thread become unusable (Err), the next call starts a new one; the old
// one stays parked so its children keep their Pdeathsig parent.
func Default() *Spawner {
	defaultMu.Lock()
	defer defaultMu.Unlock()
	if defaultSp == nil || defaultSp.Err() != nil {
		defaultSp = New()
	}
	return defaultSp
}

// Do runs f on the Spawner's locked thread and returns its error. Callers
// use it for thread-local setup (such as setns) around a Start; f must leave
// the thread as it found it.
func (s *Spawner) Do(ctx context.Context, f func() error) error {
	errc := make(chan error, 1)
	req := func() {
		if err := s.Err(); err != nil {
			errc <- err // never run anything on a thread in an unknown state
			return
		}
		errc <- f()
	}
	// The read lock is held across the send: Close cannot close reqs
	// between our check and the send, while other senders are not held
	// up behind one that waits. The loops take no lock, so they keep
	// receiving meanwhile.
	if err := s.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	if err := s.run(); err != nil {
		s.mu.RUnlock()
		return err
	}
	select {
	case s.reqs <- req:
	default:
		// Every thread is busy, maybe with a start that will not end:
		// add one, then take whichever thread is free first.
		if err := s.grow(); err != nil {
			s.mu.RUnlock()
			return err
		}
		select {
		case s.reqs <- req:
		case <-ctx.Done():
			s.mu.RUnlock()
			return ctx.Err()
		}
	}
	s.mu.RUnlock()
	return <-errc
}

// Close stops the Spawner. Its threads are returned to the Go scheduler
// (not terminated), so children they started keep their Pdeathsig parent
// alive. It waits for starts in progress.
func (s *Spawner) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.reqs)
	}
	s.mu.Unlock()
	s.loops.Wait()
	s.nnpMu.Lock()
	if s.nnp != nil {
		s.nnp.Close()
	}
	s.nnpMu.Unlock()
}

// Warm does ahead of time what the first Start would otherwise do while
// the caller waits: it starts the thread the children will come from (the
// no_new_privs companion when nnp is set) and makes os/exec run its
// one-time pidfd probe, which clones a child that exits at once (~0.5 ms
// on slow hosts; os.FindProcess runs the same cached probe). A short-lived
// CLI calls it concurrently with its other set-up. Calling it is never
// required; it is safe to call more than once.
func (s *Spawner) Warm(ctx context.Context, nnp bool) error {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Release()
	}
	if nnp && !s.pinned {
		_, err := s.noNewPrivs(ctx)
		return err
	}
	return s.Do(ctx, func() error { return nil })
}

// Options say where and how a child is started.
type Options struct {
	// Cgroup is the absolute path of the target cgroup directory; empty
	// starts the child in the caller's cgroup.
	Cgroup string
	// CgroupDir, if set, is an open fd of Cgroup, reused across spawns.
	CgroupDir *os.File
	// NoSetpgid keeps the child in our process group (the default puts it in
	// a new one led by itself).
	NoSetpgid bool
	// Pdeathsig is the signal the child gets when the spawning thread dies;
	// zero means SIGKILL.
	Pdeathsig syscall.Signal
	// Around, if set, runs on the spawner thread immediately before Start;
	// the returned undo runs right after it (for setns and the like). An
	// undo returned together with an error is run too. If an undo fails the
	// Spawner's thread is never used again (see Err).
	Around func() (undo func() error, err error)
	// NoNewPrivs starts the child with no_new_privs set: it is forked from
	// a companion thread of the Spawner that has it set (nnp_linux.go).
	NoNewPrivs bool
}

// Process is a started child.
type Process struct {
	Cmd       *exec.Cmd
	PID       int
	PidFD     int // -1 if the kernel gave none; owned by the caller
	Placement Placement
}

// clone3Broken is set once the kernel has refused CLONE_INTO_CGROUP with
// ENOSYS or EINVAL: it will not start working later.
var clone3Broken atomic.Bool

// Clone3Supported reports whether CLONE_INTO_CGROUP is believed to work
// (it has not been refused as unsupported in this process).
func Clone3Supported() bool { return !clone3Broken.Load() }

// Start starts the command that newCmd builds. newCmd is called once per
// attempt: an exec.Cmd cannot be started twice, so a retry needs a fresh one.
// The returned pidfd belongs to the caller.
func (s *Spawner) Start(ctx context.Context, newCmd func() *exec.Cmd, o Options) (*Process, error) {
	if o.NoNewPrivs && !s.pinned {
		c, err := s.noNewPrivs(ctx)
		if err != nil {
			return nil, err
		}
		return c.Start(ctx, newCmd, o)
	}
	var dir *os.File
	if o.Cgroup != "" {
		dir = o.CgroupDir
		if dir == nil {
			f, err := kfile.OpenDir(o.Cgroup)
			if err != nil {
				return nil, fmt.Errorf("open cgroup: %w", err)
			}
			defer f.Close()
			dir = f
		}
	}
	if dir != nil && !clone3Broken.Load() && !forcePreExec.Load() {
		p, err := s.start(ctx, newCmd(), o, dir, false)
		if err == nil {
			return p, nil
		}
		switch {
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
			// exec.Cmd reports the child's own errors (execve, setuid)
			// the same way: the kernel refused clone3 only if the same
			// command starts the other way. Only then is it cached.
			p, ferr := s.start(ctx, newCmd(), o, dir, true)
			if ferr != nil {
				return nil, err
			}
			clone3Broken.Store(true)
			return p, nil
		case errors.Is(err, unix.EBUSY):
			// Per target: fall through to the pre-exec path for this spawn.
		default:
			return nil, err
		}
	}
	return s.start(ctx, newCmd(), o, dir, dir != nil)
}

func (s *Spawner) start(ctx context.Context, cmd *exec.Cmd, o Options, dir *os.File, preExec bool) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	attr := cmd.SysProcAttr
	if !o.NoSetpgid {
		attr.Setpgid = true
	}
	attr.Pdeathsig = o.Pdeathsig
	if attr.Pdeathsig == 0 {
		attr.Pdeathsig = syscall.SIGKILL
	}
	pidfd := -1
	attr.PidFD = &pidfd
	placement := PlaceNone
	var cloneInto *os.File // the cgroup we clone the child into
	switch {
	case dir != nil && !preExec:
		attr.UseCgroupFD = true
		placement, cloneInto = PlaceClone3, dir
	case preExec:
		wrapPreExec(cmd, filepath.Join(o.Cgroup, "cgroup.procs"))
		placement = PlacePreExec
	}
	err := s.Do(ctx, func() error {
		var undo func() error
		var err error
		if o.Around != nil {
			undo, err = o.Around()
		}
		if err == nil {
			err = startIn(cmd, cloneInto)
		}
		if undo != nil {
			if uerr := undo(); uerr != nil {
				// The thread is in an unknown state: it must never serve
				// another request nor go back to the scheduler, and it must
				// not end (its children's Pdeathsig). A child already
				// started is fine and is returned.
				s.markBroken(fmt.Errorf("%w: %w", ErrBroken, uerr))
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Process{Cmd: cmd, PID: cmd.Process.Pid, PidFD: pidfd, Placement: placement}, nil
}

// startIn starts cmd, cloned into the cgroup dir if not nil (else where
// its own SysProcAttr says). The fd is held for the clone: a dir closed
// meanwhile (its run torn down by another goroutine) keeps its number
// until the clone is done, never lending it to another file, which the
// child would be cloned into.
func startIn(cmd *exec.Cmd, dir *os.File) error {
	if dir == nil {
		return cmd.Start()
	}
	attr := cmd.SysProcAttr
	rc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		attr.CgroupFD = int(fd)
		serr = cmd.Start()
	}); err != nil {
		// The only failure: the directory is closed.
		return fmt.Errorf("cgroup directory %s: %w (%v)", dir.Name(), os.ErrClosed, err)
	}
	return serr
}

// wrapPreExec rewrites cmd to run through /bin/sh, which moves itself into
// the cgroup (writing "0" moves the writer) and then execs the real program,
// keeping the PID, Pdeathsig and process group. argv[0] becomes the program
// path.
func wrapPreExec(cmd *exec.Cmd, procs string) {
	path := cmd.Path
	// Inside the shell, /proc/self/exe would be the shell (pidns.Wrap's
	// default init path): name our own binary by PID instead, which still
	// finds it if the file was replaced since.
	if rest, ok := strings.CutPrefix(path, "/proc/self/"); ok {
		path = "/proc/" + strconv.Itoa(os.Getpid()) + "/" + rest
	}
	args := append([]string{"/bin/sh", "-c", `echo 0 > "$0" || exit 127; exec "$@"`, procs, path}, cmd.Args[1:]...)
	cmd.Path = "/bin/sh"
	cmd.Args = args
}

var forcePreExec atomic.Bool

// ForcePreExecForTest makes Start skip clone3 placement, so tests on new
// kernels can exercise the fallback. Not for production use.
func ForcePreExecForTest(on bool) { forcePreExec.Store(on) }
