//go:build linux

package spawn

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// no_new_privs is a per-task flag that is inherited by fork and kept across
// execve, and it can never be cleared. SysProcAttr has no field for it, so
// a child gets it by being forked from a thread that has it: each Spawner
// has a companion thread with PR_SET_NO_NEW_PRIVS set. That thread is
// locked for good ("pinned"): the Go runtime runs nothing else on a locked
// thread and creates new threads from its template thread rather than from
// a locked one, so the flag cannot spread to other goroutines; Close parks
// it rather than handing it back to the scheduler. Forking from it costs
// nothing extra, unlike exec'ing through a helper that calls prctl.

// Err returns the reason the Spawner's thread is unusable (ErrBroken), or
// nil.
func (s *Spawner) Err() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Spawner) markBroken(err error) { s.broken.CompareAndSwap(nil, &err) }

// noNewPrivs returns the companion Spawner whose thread has no_new_privs
// set, starting it on first use.
func (s *Spawner) noNewPrivs(ctx context.Context) (*Spawner, error) {
	s.nnpMu.Lock()
	defer s.nnpMu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if s.nnp != nil && s.nnp.Err() == nil {
		return s.nnp, nil
	}
	if s.nnp != nil {
		s.nnp.Close() // parks the broken thread
	}
	c := &Spawner{reqs: make(chan func()), pinned: true, initThread: func() error {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("spawn: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
		return nil
	}}
	if err := c.run(); err != nil {
		c.Close()
		return nil, err
	}
	s.nnp = c
	return c, nil
}
