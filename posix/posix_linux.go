//go:build linux

package posix

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/pidns"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spawn"
)

// Options describe a POSIX run to its containment.
type Options struct {
	// RunID is the run's ID: processes marked with it belong to the run.
	RunID string
	// AdoptOrphans counts every child of this process that is not a
	// worker or the guardian as the run's: orphans re-parented to us, the
	// subreaper. Only for a process that owns one run and has no other
	// children, like snakepit run.
	AdoptOrphans bool
	// Guardian returns the PID of the guardian watching the owner (0:
	// none); it is never a target.
	Guardian func() int
	// Created is when the run was made: processes started before it are
	// not the run's.
	Created time.Time
	// StopSignal is the first signal of the teardown; zero means SIGTERM.
	StopSignal unix.Signal
	// OnFirstGroup is called with the first worker's process group, the
	// start time of its leader (the worker) and its session, for the
	// run's record (gc, kill and the guardian find the run by it).
	OnFirstGroup func(pgid int, leaderStart uint64, sid int)
}

// Containment is the containment of a run without a cgroup.
type Containment struct {
	o     Options
	mu    sync.Mutex
	roots []reaper.Identity
	pgids []int
}

// New makes the containment of a POSIX run. The caller must be a child
// subreaper (reaper.SetSubreaper), so that the run's orphans come to it.
func New(o Options) *Containment { return &Containment{o: o} }

// Mechanism returns MechanismPOSIX.
func (c *Containment) Mechanism() string { return record.MechanismPOSIX }

// Group returns nil: there is no cgroup.
func (c *Containment) Group() *cgroup.Group { return nil }

// Place leaves the worker where it is: a new process group of its own
// (spawn always Setpgid's) is its whole placement.
func (c *Containment) Place(o *spawn.Options) {}

// Gone returns nil: nothing can be removed behind the run's back.
func (c *Containment) Gone() error { return nil }

// Adopt records a started worker: its identity (a root of the run's
// process tree) and its process group.
func (c *Containment) Adopt(pid, pidfd int) {
	// One read gives the identity and the session: a worker that exits at
	// once may be reaped before a second look.
	st, err := reaper.ReadStat(pid)
	if err != nil {
		return // already gone
	}
	// The stat was read by PID; the pidfd says whether that PID was still
	// our worker then. A worker that has already exited is no root, but
	// what it left in its group (a group's ID is never reused while it has
	// members) is still the run's.
	alive := pidfd < 0 || !reaper.PidfdExited(pidfd, 0)
	if !alive && st.PGID != pid {
		return // the PID is another process's by now
	}
	c.mu.Lock()
	if alive {
		c.roots = append(c.roots, reaper.Identity{PID: pid, Start: st.Start})
	}
	c.pgids = append(c.pgids, pid) // spawn always Setpgid's
	first := len(c.pgids) == 1
	c.mu.Unlock()
	if first && c.o.OnFirstGroup != nil {
		c.o.OnFirstGroup(pid, st.Start, st.Session)
	}
}

// family returns the selector of the run's processes for its own
// supervisor.
func (c *Containment) family() reaper.Family {
	c.mu.Lock()
	f := reaper.Family{
		RunID:          c.o.RunID,
		Roots:          append([]reaper.Identity(nil), c.roots...),
		PGIDs:          append([]int(nil), c.pgids...),
		SkipArgvMarked: IsSnakepitCommand,
		NotBefore:      c.o.Created,
	}
	c.mu.Unlock()
	if c.o.AdoptOrphans {
		f.AdoptChildrenOf = os.Getpid()
	}
	if c.o.Guardian != nil {
		if g := c.o.Guardian(); g > 0 {
			f.Exclude = map[int]bool{g: true}
		}
	}
	return f
}

// Teardown kills the run's processes (reaper.Family.Kill): SIGTERM, grace,
// SIGKILL through verified pidfds, until a walk of /proc finds none.
func (c *Containment) Teardown(ctx context.Context, grace time.Duration) (containment.Report, error) {
	start := time.Now()
	var rep containment.Report
	stop := c.o.StopSignal
	if stop == 0 {
		stop = unix.SIGTERM
	}
	err := killFamily(ctx, c.family(), grace, stop, &rep)
	rep.Duration = time.Since(start)
	return rep, err
}

func killFamily(ctx context.Context, f reaper.Family, grace time.Duration, stop unix.Signal, rep *containment.Report) error {
	fr, err := f.KillWith(ctx, grace, stop)
	rep.Terminated = fr.Terminated
	if fr.Killed > 0 {
		rep.Killed = true
		rep.KillMechanism = "pidfd SIGKILL"
	}
	return err
}

// TeardownRecord tears down a POSIX run of another (usually dead)
// supervisor from its record: marked processes, members of its process
// group and their descendants, stopped, terminated with grace and killed
// through verified pidfds; then its file record is removed.
func TeardownRecord(ctx context.Context, rec *record.Record, grace time.Duration) (containment.Report, error) {
	start := time.Now()
	var rep containment.Report
	f := reaper.Family{RunID: rec.ID, SkipArgvMarked: IsSnakepitCommand, NotBefore: rec.Created}
	if rec.PGID > 0 {
		f.PGIDs = []int{rec.PGID}
		switch {
		case rec.PGIDStart != 0:
			// The leader, if alive, is the first worker: a root.
			f.Roots = []reaper.Identity{{PID: rec.PGID, Start: rec.PGIDStart}}
			f.GroupLeaders = map[int]uint64{rec.PGID: rec.PGIDStart}
			f.Session, f.HasSession = rec.SID, true
		case rec.SID != 0:
			f.Session, f.HasSession = rec.SID, true // an older record
		}
	}
	if g := rec.Guardian; g != nil && g.PID > 0 {
		f.Exclude = map[int]bool{g.PID: true}
	}
	err := killFamily(ctx, f, grace, unix.SIGTERM, &rep)
	if err == nil {
		if rerr := record.Remove(rec.ID); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	rep.Duration = time.Since(start)
	return rep, err
}

// IsSnakepitCommand reports whether pid runs a snakepit command other than
// the PID-namespace init: `snakepit run --run-id X` carries the ID on its
// command line before and while its run exists, but is the run's owner,
// not one of its processes. Judged by /proc/PID/exe (set by the kernel, not
// by argv) being our own executable or a file named snakepit.
func IsSnakepitCommand(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return false
	}
	return IsSnakepitProcess(pid, exe, func() []string {
		b, err := kfile.ReadAll(dir + "/cmdline")
		if err != nil {
			return nil
		}
		return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	})
}

// IsSnakepitProcess is IsSnakepitCommand for a process whose exe link is
// known already (a run-ID scan read it); argv is read only when needed.
func IsSnakepitProcess(pid int, exe string, argv func() []string) bool {
	if exe == "" {
		return false
	}
	same := filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "snakepit"
	if !same {
		self, err1 := os.Stat("/proc/self/exe")
		other, err2 := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
		same = err1 == nil && err2 == nil && os.SameFile(self, other)
	}
	if !same {
		return false
	}
	a := argv()
	return a != nil && (len(a) < 2 || a[1] != pidns.Subcommand)
}
