//go:build linux

package reaper

import (
	"os"
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
	mu     sync.Mutex // held while reaping and while a subscriber starts a child
	subs   map[int]chan Exit
	orphan func(Exit)
	sigc   chan os.Signal
	done   chan struct{}
	reaped uint64
}

// New returns a Reaper; call Start to run it. orphan, if non-nil, is called
// (without locks held) for each reaped process nobody subscribed to.
func New(orphan func(Exit)) *Reaper {
	return &Reaper{subs: make(map[int]chan Exit), orphan: orphan}
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
		} else if r.orphan != nil {
			orphans = append(orphans, e)
		}
	}
	r.mu.Unlock()
	for _, e := range orphans {
		r.orphan(e)
	}
}

// Reaped returns how many processes the loop has reaped so far.
func (r *Reaper) Reaped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaped
}

// Subscribe runs start (which must start exactly one child and return its PID)
// with reaping blocked, and subscribes to that child's exit. Holding the
// lock across the start closes the window in which the child could exit and
// be reaped before anyone listens, and keeps the loop away from exec's own
// wait for a child whose exec failed.
func (r *Reaper) Subscribe(start func() (int, error)) (<-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return nil, err
	}
	c := make(chan Exit, 1)
	r.subs[pid] = c
	return c, nil
}
