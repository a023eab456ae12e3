//go:build linux

package snakepit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/pidns"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/spawn"
)

// POSIX mode: runs without a cgroup. What the run is made of is
// reconstructed from /proc whenever it is needed (reaper.Family): the
// workers and their descendants, the run's process groups, processes marked
// with the run ID and, for `snakepit run`, every orphan re-parented to the
// supervisor (a subreaper). Teardown is SIGTERM to all of them and to the
// process groups, grace, SIGKILL the same way, repeated until a walk of
// /proc finds none.

// posixRun is the state of a run in POSIX mode.
type posixRun struct {
	mu    sync.Mutex
	roots []reaper.Identity
	pgids []int
}

// fallsBack reports whether a failure to set up the run cgroup lets mode
// fall back to POSIX: only in ModeAuto, and only for "cgroup2 is not
// usable here" (none mounted, or the cgroupfs refused us).
func fallsBack(mode Mode, err error) bool {
	return mode == ModeAuto && (errors.Is(err, cgroup.ErrNoCgroup2) || errors.Is(err, cgroup.ErrPermission))
}

// createPOSIX makes a run without a cgroup. reason is why (nil when
// ModePOSIX was asked for).
func createPOSIX(ctx context.Context, id string, opts Options, reason error) (*Run, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rec, err := newRecord(id, opts, "")
	if err != nil {
		return nil, err
	}
	rec.Mechanism = MechanismPOSIX
	rec.Cgroup = ""
	if old, err := ReadRecord(id); err == nil {
		if alive, why := old.Owner.Check(); alive {
			return nil, fmt.Errorf("%w: POSIX run %s has a live owner (%s)", cgroup.ErrExists, id, why)
		}
	}
	// Orphans of the run must come to us (not to init), so that they can
	// be found as our children and reaped.
	if err := reaper.SetSubreaper(); err != nil {
		return nil, fmt.Errorf("POSIX mode: become subreaper: %w", err)
	}
	if err := WriteRecord(rec); err != nil {
		return nil, fmt.Errorf("POSIX mode: write run record (set %s to a writable directory): %w", RecordsDirEnv, err)
	}
	sp := opts.Spawner
	if sp == nil {
		sp = spawn.Default()
	}
	return &Run{id: id, opts: opts, spawner: sp, rec: rec, workers: make(map[int]*Worker),
		posix: &posixRun{}, fallback: reason}, nil
}

// Mechanism says how the run is contained: MechanismCgroup or
// MechanismPOSIX.
func (r *Run) Mechanism() string {
	if r.posix != nil {
		return MechanismPOSIX
	}
	return MechanismCgroup
}

// Fallback returns why a ModeAuto run uses POSIX mode (the error that made
// the cgroup unusable), or nil.
func (r *Run) Fallback() error { return r.fallback }

// wrapCmd applies the run's PID-namespace setting to a fresh exec.Cmd.
func (r *Run) wrapCmd(cmd *exec.Cmd) {
	if !r.opts.PidNS {
		return
	}
	grace := r.opts.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	pidns.Wrap(cmd, pidns.Options{InitPath: r.opts.InitPath, Grace: grace, UserNS: pidns.UserNSNeeded()})
}

// noteWorker records a started worker of a POSIX run: its identity (a root
// of the run's process tree) and its process group; the first worker's
// group goes into the run record for the guardian, gc and kill.
func (r *Run) noteWorker(w *Worker) {
	if r.posix == nil {
		return
	}
	id, err := reaper.IdentityOf(w.PID())
	if err != nil {
		return // already gone
	}
	if fd := w.PidFD(); fd >= 0 {
		// The start time was read by PID; the pidfd says whether that PID
		// was still our worker when it was read.
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(p, 0); n > 0 {
			return
		}
	}
	r.posix.mu.Lock()
	r.posix.roots = append(r.posix.roots, id)
	r.posix.pgids = append(r.posix.pgids, w.PID()) // spawn always Setpgid's
	first := len(r.posix.pgids) == 1
	r.posix.mu.Unlock()
	if first {
		r.mu.Lock()
		r.rec.PGID = w.PID()
		rec := *r.rec
		r.mu.Unlock()
		_ = WriteRecord(&rec) // best effort: the live run does not need it
	}
}

// family returns the selector of the run's processes for its own
// supervisor.
func (r *Run) family() reaper.Family {
	r.posix.mu.Lock()
	f := reaper.Family{
		RunID:          r.id,
		Roots:          append([]reaper.Identity(nil), r.posix.roots...),
		PGIDs:          append([]int(nil), r.posix.pgids...),
		SkipArgvMarked: isSnakepitCommand,
	}
	r.posix.mu.Unlock()
	if r.opts.AdoptOrphans {
		f.AdoptChildrenOf = os.Getpid()
	}
	r.mu.Lock()
	if g := r.rec.Guardian; g != nil && g.PID > 0 {
		f.Exclude = map[int]bool{g.PID: true}
	}
	f.NotBefore = r.rec.Created
	r.mu.Unlock()
	return f
}

// teardownPOSIX kills the run's processes (reaper.Family.Kill) and removes
// its record once none is left.
func (r *Run) teardownPOSIX(ctx context.Context, grace time.Duration, rep *TeardownReport) error {
	err := killFamily(ctx, r.family(), grace, rep)
	if err != nil {
		return err
	}
	return RemoveRecord(r.id)
}

func killFamily(ctx context.Context, f reaper.Family, grace time.Duration, rep *TeardownReport) error {
	fr, err := f.Kill(ctx, grace)
	rep.Terminated = fr.Terminated
	if fr.Killed > 0 {
		rep.Killed = true
		rep.KillMechanism = "pidfd SIGKILL"
	}
	return err
}

// teardownPOSIXRecord tears down a POSIX run of another (usually dead)
// supervisor from its record: marked processes, members of its process
// group and their descendants.
func teardownPOSIXRecord(ctx context.Context, rec *Record, grace time.Duration) (TeardownReport, error) {
	start := time.Now()
	var rep TeardownReport
	f := reaper.Family{RunID: rec.ID, SkipArgvMarked: isSnakepitCommand, NotBefore: rec.Created}
	if rec.PGID > 0 {
		f.PGIDs = []int{rec.PGID}
	}
	if g := rec.Guardian; g != nil && g.PID > 0 {
		f.Exclude = map[int]bool{g.PID: true}
	}
	err := killFamily(ctx, f, grace, &rep)
	if err == nil {
		if rerr := RemoveRecord(rec.ID); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	rep.Duration = time.Since(start)
	return rep, err
}

// isSnakepitCommand reports whether pid runs a snakepit command other than
// the PID-namespace init: `snakepit run --run-id X` carries the ID on its
// command line before and while its run exists, but is the run's owner,
// not one of its processes. Judged by /proc/PID/exe (set by the kernel, not
// by argv) being our own executable or a file named snakepit.
func isSnakepitCommand(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return false
	}
	return isSnakepitProcess(pid, exe, func() []string {
		b, err := kfile.ReadAll(dir + "/cmdline")
		if err != nil {
			return nil
		}
		return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	})
}

// isSnakepitProcess is isSnakepitCommand for a process whose exe link is
// known already (a run-ID scan read it); argv is read only when needed.
func isSnakepitProcess(pid int, exe string, argv func() []string) bool {
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
