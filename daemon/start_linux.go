//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	snakepit "github.com/snakepit/snakepit"
)

// startTimeout bounds a worker's start, which waits for the child's exec.
// A child stopped before exec (kill(-1, SIGSTOP) by its own user) never
// gets there; once the time is up the run's cgroup is killed, which ends
// it (clone3 put it there at clone time) and frees the spawn thread.
// It is generous: a start on a host with a load of 50 took 13 s.
const startTimeout = 20 * time.Second

// ErrStartTimeout is returned for a start that did not finish within
// startTimeout; the run's processes were killed.
var ErrStartTimeout = errors.New("worker start did not finish in time; the run's processes were killed")

// maxStartsPerUID bounds the starts of one non-root UID in progress at
// once; more wait for their turn. Each start holds a spawn thread until
// its child has exec'd, and a UID whose children are stopped before exec
// must leave threads (spawn.MaxThreads in all) to the others. Root's
// children can be stopped only by root.
const maxStartsPerUID = 16

// ErrTooManyStarts is returned when a start waited for its turn among its
// UID's starts in progress until its context ended.
var ErrTooManyStarts = errors.New("too many worker starts in progress")

// startBounded is rs.run.Start with startTimeout.
func (d *Daemon) startBounded(ctx context.Context, rs *runState, c snakepit.Command) (*snakepit.Worker, error) {
	if rs.owner != 0 {
		sem := d.startSlots(rs.owner)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w for uid %d (%d at once): %w", ErrTooManyStarts, rs.owner, maxStartsPerUID, ctx.Err())
		}
		defer func() { <-sem }()
	}
	var fired atomic.Bool
	t := time.AfterFunc(startTimeout, func() {
		fired.Store(true)
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, err := rs.run.Cgroup().Kill(kctx)
		d.log.Warn("worker start timed out: run cgroup killed", "run", rs.run.ID(), "after", startTimeout, "kill_err", err)
	})
	w, err := rs.run.Start(ctx, c)
	if t.Stop() || !fired.Load() {
		return w, err
	}
	// The child was killed before (or as) it exec'd. A Start that still
	// reported success handed back a dead worker: the run keeps and reaps
	// it, the daemon does not list it.
	if err != nil {
		return nil, fmt.Errorf("%w (after %v): %w", ErrStartTimeout, startTimeout, err)
	}
	return nil, fmt.Errorf("%w (after %v)", ErrStartTimeout, startTimeout)
}

// startSlots returns uid's semaphore of starts in progress.
func (d *Daemon) startSlots(uid int) chan struct{} {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	if d.starts == nil {
		d.starts = make(map[int]chan struct{})
	}
	c := d.starts[uid]
	if c == nil {
		c = make(chan struct{}, maxStartsPerUID)
		d.starts[uid] = c
	}
	return c
}
