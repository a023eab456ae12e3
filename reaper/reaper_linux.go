//go:build linux

package reaper

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// SetSubreaper marks the calling process as a child subreaper.
func SetSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// IsSubreaper reports whether the calling process is a child subreaper.
func IsSubreaper() (bool, error) {
	var v int32
	err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafePointer(&v)), 0, 0, 0)
	return v != 0, err
}

// Exit is a reaped child.
type Exit struct {
	PID    int
	Status unix.WaitStatus
}

// Reaper is the process's one wait4(-1) loop.
type Reaper struct {
	mu   sync.Mutex // held while reaping; never across a subscriber's start
	subs map[int]chan Exit
	// starting counts Subscribe calls whose start runs; while any does, an
	// exit nobody subscribed to may be theirs, so it is held, not yet an
	// orphan.
	starting int
	held     map[int]heldExit
	orphan   func(Exit)
	sigc     chan os.Signal
	done     chan struct{}
	reaped   uint64
}

// New returns a Reaper; call Start to run it. orphan, if non-nil, is called
// (without locks held) for each reaped process nobody subscribed to.
func New(orphan func(Exit)) *Reaper {
	return &Reaper{subs: make(map[int]chan Exit), held: make(map[int]heldExit), orphan: orphan}
}

// Start begins reaping on SIGCHLD.
func (r *Reaper) Start() {
	r.sigc = make(chan os.Signal, 32)
	r.done = make(chan struct{})
	signal.Notify(r.sigc, unix.SIGCHLD)
	go func() {
		for {
			select {
			case <-r.sigc:
				r.Reap()
			case <-r.done:
				return
			}
		}
	}()
	r.Reap() // children that exited before Notify was installed
}

// Stop ends the loop. Children exiting afterwards stay zombies until the
// process exits.
func (r *Reaper) Stop() {
	if r.done == nil {
		return
	}
	signal.Stop(r.sigc)
	close(r.done)
}

// Reap collects every exited child now. It is called from the loop; tests
// may call it directly.
func (r *Reaper) Reap() {
	var orphans []Exit
	r.mu.Lock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		r.reaped++
		e := Exit{PID: pid, Status: ws}
		if c, ok := r.subs[pid]; ok {
			delete(r.subs, pid)
			c <- e // buffered, never blocks
		} else if r.starting > 0 {
			if old, ok := r.held[pid]; ok {
				orphans = append(orphans, old.Exit) // its PID was reused
			}
			r.held[pid] = heldExit{Exit: e, seq: r.reaped}
		} else {
			orphans = append(orphans, e)
		}
	}
	r.mu.Unlock()
	r.report(orphans)
}

func (r *Reaper) report(orphans []Exit) {
	if r.orphan == nil {
		return
	}
	for _, e := range orphans {
		r.orphan(e)
	}
}

// heldExit is an exit reaped while a start ran; seq is the reap count at
// that moment.
type heldExit struct {
	Exit
	seq uint64
}

// Reaped returns how many processes the loop has reaped so far.
func (r *Reaper) Reaped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Subscribe runs start (which must start exactly one child and return its
// PID) and subscribes to that child's exit. The start runs without the
// lock, so a start that never ends (a child stopped before exec) holds up
// neither reaping nor other starts: an exit reaped meanwhile that nobody
// subscribed to is held until the starts in progress have said their PIDs.
// One reaped after this start began, with its PID, is its child's.
func (r *Reaper) Subscribe(start func() (int, error)) (<-chan Exit, error) {
	r.mu.Lock()
	r.starting++
	since := r.reaped
	r.mu.Unlock()
	pid, err := start()
	var c chan Exit
	var orphans []Exit
	r.mu.Lock()
	r.starting--
	if err == nil {
		c = make(chan Exit, 1)
		if h, ok := r.held[pid]; ok && h.seq > since {
			delete(r.held, pid)
			c <- h.Exit
		} else {
			r.subs[pid] = c
		}
	}
	if r.starting == 0 {
		for pid, h := range r.held {
			orphans = append(orphans, h.Exit)
			delete(r.held, pid)
		}
	}
	r.mu.Unlock()
	r.report(orphans)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// StartDetached starts cmd, a child meant to outlive its caller (a
// guardian, a scope's holder), and makes sure its exit is collected
// should it end first: by rp, the process's one wait4(-1) loop, when
// there is one (os/exec's pidfd is then released), else by a goroutine's
// cmd.Wait. It returns the child's PID.
func StartDetached(rp *Reaper, cmd *exec.Cmd) (int, error) {
	if rp == nil {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		go func() { _ = cmd.Wait() }()
		return cmd.Process.Pid, nil
	}
	var pid int
	_, err := rp.Subscribe(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		pid = cmd.Process.Pid
		return pid, nil
	})
	if err != nil {
		return 0, err
	}
	_ = cmd.Process.Release() // sets cmd.Process.Pid to -1: pid was taken before
	return pid, nil
}
