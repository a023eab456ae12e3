package containment

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spawn"
)

// Containment holds a run's processes.
type Containment interface {
	// Mechanism is MechanismCgroup or MechanismPOSIX.
	Mechanism() string
	// Group is the run cgroup, nil when there is none.
	Group() *cgroup.Group
	// Place sets the spawn options that put a new worker inside.
	Place(o *spawn.Options)
	// Adopt notes a started worker (pid, and its pidfd or -1).
	Adopt(pid, pidfd int)
	// Gone returns an error wrapping cgroup.ErrNotExist when the
	// containment was removed behind the run's back, else nil.
	Gone() error
	// Teardown ends every process of the run, with grace, and removes
	// what holds them. The caller calls it once.
	Teardown(ctx context.Context, grace time.Duration) (Report, error)
}

// Cgroup is the containment of a run cgroup.
type Cgroup struct {
	cg  *cgroup.Group
	dir *os.File // open for CLONE_INTO_CGROUP, reused by every spawn
	// StopSignal is the first signal of Teardown; zero means SIGTERM.
	StopSignal unix.Signal
}

// NewCgroup contains a run in cg, which this process just made. It keeps
// the directory open for spawns until Teardown.
func NewCgroup(cg *cgroup.Group) (*Cgroup, error) {
	dir, err := cg.OpenDir()
	if err != nil {
		return nil, err
	}
	return &Cgroup{cg: cg, dir: dir}, nil
}

// Mechanism returns MechanismCgroup.
func (c *Cgroup) Mechanism() string { return record.MechanismCgroup }

// Group returns the run cgroup.
func (c *Cgroup) Group() *cgroup.Group { return c.cg }

// Place clones the worker straight into the run cgroup.
func (c *Cgroup) Place(o *spawn.Options) { o.Cgroup, o.CgroupDir = c.cg.Path(), c.dir }

// Adopt does nothing: the cgroup holds every process of the run already.
func (c *Cgroup) Adopt(pid, pidfd int) {}

// Gone reports a run cgroup removed by hand while empty: clone3 into it
// fails with ENOENT, which would otherwise read as "program not found".
func (c *Cgroup) Gone() error {
	if _, err := os.Stat(filepath.Join(c.cg.Path(), "cgroup.procs")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s was removed while the run was in use", cgroup.ErrNotExist, c.cg.Path())
	}
	return nil
}

// Teardown is TeardownGroup of the run cgroup; it closes the directory.
func (c *Cgroup) Teardown(ctx context.Context, grace time.Duration) (Report, error) {
	stop := c.StopSignal
	if stop == 0 {
		stop = unix.SIGTERM
	}
	start := time.Now()
	var rep Report
	err := releaseScope(ctx, c.cg, teardown(ctx, c.cg, grace, stop, &rep, nil))
	rep.Duration = time.Since(start)
	c.dir.Close()
	return rep, err
}

// TeardownGroup tears down a run cgroup: SIGTERM to every process in it
// (setsid'd grandchildren too), up to grace for them to leave, then
// cgroup.kill, wait until the cgroup is empty and remove it. A cancelled
// ctx still kills (the kill itself does not block), but may return before
// the cgroup is removed.
func TeardownGroup(ctx context.Context, cg *cgroup.Group, grace time.Duration) (Report, error) {
	return TeardownGroupSeen(ctx, cg, grace, nil)
}

// TeardownGroupSeen is TeardownGroup for a caller that has just read the
// group's cgroup.events itself (seen; nil when it has not).
func TeardownGroupSeen(ctx context.Context, cg *cgroup.Group, grace time.Duration, seen *cgroup.Events) (Report, error) {
	start := time.Now()
	var rep Report
	err := releaseScope(ctx, cg, teardown(ctx, cg, grace, unix.SIGTERM, &rep, seen))
	rep.Duration = time.Since(start)
	return rep, err
}

// releaseScope ends the transient scope of a run in one (package
// placement) once the run cgroup is gone: err is the teardown's.
func releaseScope(ctx context.Context, cg *cgroup.Group, err error) error {
	if err != nil {
		return err
	}
	return placement.ReleaseScope(context.WithoutCancel(ctx), cg.Path())
}

func teardown(ctx context.Context, cg *cgroup.Group, grace time.Duration, stop unix.Signal, rep *Report, seen *cgroup.Events) error {

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
		n, err := cg.Signal(stop)
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
	kill := func(ctx context.Context) error {
		rep.Killed = true
		m, err := cg.Kill(ctx)
		rep.KillMechanism = string(m)
		if err != nil && !errors.Is(err, cgroup.ErrNotExist) {
			return fmt.Errorf("kill %s: %w", cg.Path(), err)
		}
		return err
	}
	if ev.Populated {
		err := kill(ctx)
		if errors.Is(err, cgroup.ErrNotExist) {
			rep.Vanished = true
			return nil
		}
		if err == nil {
			afterKill(cg)
			err = cg.WaitKilled(ctx, func() error { return kill(ctx) })
		}
		// Gone once our kill emptied it: not removed by someone else
		// (systemd collects an emptied scope, and the run with it).
		if err != nil && !errors.Is(err, cgroup.ErrNotExist) {
			return err
		}
	}
	return removeGroup(ctx, cg, kill)
}

// KillAndRemove is the end of a teardown for a caller that kills the
// group its own way (the guardian service writes the cgroup.kill its
// owner passed it): kill, wait until the group is empty, killing again a
// process that joins meanwhile, and remove it. kill's error wraps
// cgroup.ErrNotExist when the group is gone.
func KillAndRemove(ctx context.Context, cg *cgroup.Group, kill func() error) error {
	k := func(context.Context) error { return kill() }
	err := kill()
	if err == nil {
		err = cg.WaitKilled(ctx, kill)
	}
	if err == nil {
		err = removeGroup(ctx, cg, k)
	}
	return err
}

// afterKill runs after a teardown's first kill (a test's hook).
var afterKill = func(*cgroup.Group) {}

// removeGroup removes an emptied run cgroup. Removal must happen even when
// the caller's ctx is already done: a leftover empty cgroup is a leak. It
// gets its own short deadline. A process that joined since the cgroup was
// seen empty (rmdir says EBUSY) is killed like the others.
func removeGroup(ctx context.Context, cg *cgroup.Group, kill func(context.Context) error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	backoff := 200 * time.Microsecond
	for {
		err := cg.RemoveOnce()
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		if backoff > 200*time.Microsecond {
			// Not the first EBUSY: do not spin if it outlasts the wait.
			select {
			case <-rctx.Done():
				return fmt.Errorf("remove cgroup %s: still busy: %w", cg.Path(), rctx.Err())
			case <-time.After(backoff):
			}
		}
		backoff = min(2*backoff, 20*time.Millisecond)
		// EBUSY with nothing in it: a child cgroup, or the moment after
		// the last process left; only a process that joined is killed.
		if ev, rerr := cg.ReadEvents(); rerr == nil && !ev.Populated {
			continue
		}
		err = kill(rctx)
		if err == nil {
			err = cg.WaitKilled(rctx, func() error { return kill(rctx) })
		}
		if errors.Is(err, cgroup.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", cg.Path(), err)
		}
	}
}

// Release closes the directory kept for spawns without tearing anything
// down, for an owner that abandons the run to its guardian or to gc.
func (c *Cgroup) Release() { c.dir.Close() }
