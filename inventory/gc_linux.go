//go:build linux

package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/posix"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// DefaultGCMinAge is how old an empty run cgroup without a record must be
// before gc removes it: Create makes the directory an instant before it
// writes the record, and gc must not race it.
const DefaultGCMinAge = 10 * time.Second

// GCOptions configure GC.
type GCOptions struct {
	// DryRun reports what would be done and does nothing.
	DryRun bool
	// Grace is the SIGTERM-to-SIGKILL grace for stale runs and orphaned
	// marked processes. The owner is gone, so nobody else will give them
	// one.
	Grace time.Duration
	// Parents are cgroup parents to search besides KnownParents().
	Parents []string
	// MinAge: empty record-less run cgroups younger than this are left
	// alone; 0 means DefaultGCMinAge.
	MinAge time.Duration
	// NoScan skips the /proc scan for marked processes.
	NoScan bool
	// OnlyParents searches Parents only, not KnownParents() (tests, or a
	// gc scoped to one subtree).
	OnlyParents bool
	// RunIDs, when non-empty, limits gc to these runs: other run cgroups,
	// records and marked processes are not looked at.
	RunIDs []string
}

// GC actions.
const (
	GCRemoved     = "removed"      // a run cgroup or record torn down and removed
	GCWouldRemove = "would-remove" // dry run
	GCKilled      = "killed"       // a marked process ended (SIGTERM or SIGKILL)
	GCWouldKill   = "would-kill"   // dry run
	GCSkipped     = "skipped"      // left alone, with the reason
	GCFailed      = "failed"
)

// GCItem is one thing gc acted on or deliberately left alone.
type GCItem struct {
	// Kind is "cgroup" (a run cgroup), "record" (a file record, POSIX
	// run) or "process" (a marked process).
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Cgroup string `json:"cgroup,omitempty"`
	// PID and Cmdline name a process (Kind "process").
	PID     int    `json:"pid,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// Procs is how many processes a run teardown ended.
	Procs  int    `json:"procs,omitempty"`
	Reason string `json:"reason"`
	Action string `json:"action"`
	// Outcome is the process's fate (reaper.Outcome) for Kind "process".
	Outcome string `json:"outcome,omitempty"`
	Error   string `json:"error,omitempty"`
}

// GCReport is what GC did.
type GCReport struct {
	DryRun bool     `json:"dry_run"`
	Items  []GCItem `json:"items"`
	// Live is the number of runs left alone because their owner lives.
	Live       int     `json:"live_runs"`
	DurationMS float64 `json:"duration_ms"`
}

// GC removes what dead supervisors left behind, and never touches a run
// whose owner is alive:
//
//  1. Run cgroups under the known parents whose record is stale (owner
//     dead, PID reused, other boot) are torn down (grace, then
//     cgroup.kill) and removed, concurrently. Just before each teardown
//     the record is read again and must be unchanged.
//  2. Run cgroups without a record (made by hand or by an old version)
//     are removed only if empty and older than MinAge; populated ones are
//     reported and left alone: with no owner on record there is no
//     evidence they are abandoned (use KillRun).
//  3. Stale POSIX runs (file records) are swept and their records removed;
//     file records of cgroup runs whose cgroup is gone are removed.
//  4. /proc is scanned for processes marked with a run ID whose run is not
//     live (no cgroup, no record, or a stale owner); each is pinned by a
//     pidfd and killed with escalation (reaper.Sweep). Liveness is judged
//     after a process was seen, so a run created meanwhile is live by
//     then: its record is written before its first worker starts.
//     snakepit's own commands (whose argv names a run ID before the run
//     exists) and gc's own ancestors are never targets.
func GC(ctx context.Context, o GCOptions) (GCReport, error) {
	start := time.Now()
	rep := GCReport{DryRun: o.DryRun, Items: []GCItem{}}
	minAge := o.MinAge
	if minAge == 0 {
		minAge = DefaultGCMinAge
	}
	parents := KnownParents(o.Parents...)
	if o.OnlyParents {
		parents = o.Parents
	}
	only := func(string) bool { return true }
	if len(o.RunIDs) > 0 {
		set := map[string]bool{}
		for _, id := range o.RunIDs {
			set[id] = true
		}
		only = func(id string) bool { return set[id] }
	}
	var runs map[string]string
	if len(parents) > 0 {
		var err error
		if runs, err = ListRunCgroups(parents...); err != nil {
			return rep, err
		}
	}
	// In a dry run, processes of stale run cgroups are reported with their
	// run, not again as orphans.
	doomed := map[string]bool{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	add := func(it GCItem) {
		mu.Lock()
		rep.Items = append(rep.Items, it)
		mu.Unlock()
	}

	// Stale runs usually come in batches from one dead owner (a
	// supervisor's pool): judge each owner once per gc.
	type verdictOf struct {
		stale bool
		why   string
	}
	verdicts := map[record.Owner]verdictOf{}
	verdict := func(rec *record.Record) (bool, string) {
		if v, ok := verdicts[rec.Owner]; ok {
			return v.stale, v.why
		}
		stale, why := record.Stale(rec)
		verdicts[rec.Owner] = verdictOf{stale, why}
		return stale, why
	}

	// 1 and 2: run cgroups.
	for id, path := range runs {
		if !only(id) {
			continue
		}
		it := GCItem{Kind: "cgroup", ID: id, Cgroup: path}
		rec, err := record.ReadCgroup(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // removed meanwhile
		case errors.Is(err, record.ErrNoRecord):
			gcUnrecorded(ctx, it, path, minAge, o.DryRun, add)
			continue
		case err != nil:
			it.Action, it.Reason, it.Error = GCFailed, "cannot read record", err.Error()
			add(it)
			continue
		}
		stale, why := verdict(rec)
		if !stale {
			rep.Live++
			continue
		}
		it.Reason = why
		doomed[id] = true // known and stale: its marked processes go too
		if o.DryRun {
			it.Action = GCWouldRemove
			if cg, err := cgroup.Open(path); err == nil {
				if pids, err := cg.ProcsRecursive(); err == nil {
					it.Procs = len(pids)
				}
			}
			add(it)
			continue
		}
		// Empty runs (the common case) are removed right here, one after
		// the other, by a plain rmdir (it fails with EBUSY on a populated
		// group, so it doubles as the emptiness check): rmdir takes the
		// kernel's global cgroup mutex, and concurrent rmdirs only contend
		// on it (3x the CPU per rmdir, measured). Populated ones are torn
		// down concurrently: their time goes into waiting for processes to
		// die.
		err = cgroup.At(path).RemoveOnce()
		if err == nil {
			it.Action = GCRemoved
			if err := placement.ReleaseScope(ctx, path); err != nil {
				it.Action, it.Error = GCFailed, err.Error()
			}
			add(it)
			continue
		}
		if !errors.Is(err, unix.EBUSY) {
			it.Action, it.Error = GCFailed, err.Error()
			add(it)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			add(gcTeardownStale(ctx, it, path, rec, o.Grace))
		}()
	}
	wg.Wait()

	// 3: file records.
	recs, err := record.List()
	if err != nil {
		return rep, err
	}
	for _, rec := range recs {
		if !only(rec.ID) {
			continue
		}
		it := GCItem{Kind: "record", ID: rec.ID, Cgroup: rec.Cgroup}
		if rec.Mechanism == record.MechanismCgroup {
			if _, err := os.Stat(rec.Cgroup); !errors.Is(err, fs.ErrNotExist) {
				continue // listed (and judged) with its cgroup
			}
			it.Reason = "record of a run cgroup that no longer exists"
			it.Action = GCWouldRemove
			if !o.DryRun {
				it.Action = GCRemoved
				if err := record.Remove(rec.ID); err != nil {
					it.Action, it.Error = GCFailed, err.Error()
				}
			}
			add(it)
			continue
		}
		stale, why := record.Stale(rec)
		if !stale {
			rep.Live++
			continue
		}
		it.Reason = why
		doomed[rec.ID] = true
		if o.DryRun {
			it.Action = GCWouldRemove
			add(it)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := posix.TeardownRecord(ctx, rec, o.Grace)
			it.Action, it.Procs = GCRemoved, tr.Terminated
			if err != nil {
				it.Action, it.Error = GCFailed, err.Error()
			}
			add(it)
		}()
	}
	wg.Wait()

	// Lock files of guardians that are gone (SIGKILLed with their owner).
	if !o.DryRun && len(o.RunIDs) == 0 {
		removeStaleGuardianLocks()
	}

	// 4: marked processes of runs that are not live.
	if !o.NoScan {
		if err := gcMarked(ctx, o, parents, only, doomed, &rep); err != nil {
			return rep, err
		}
	}
	sort.SliceStable(rep.Items, func(i, j int) bool {
		a, b := rep.Items[i], rep.Items[j]
		if a.Kind != b.Kind {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.PID < b.PID
	})
	rep.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return rep, nil
}

var kindOrder = map[string]int{"cgroup": 0, "record": 1, "process": 2}

func gcUnrecorded(ctx context.Context, it GCItem, path string, minAge time.Duration, dry bool, add func(GCItem)) {
	cg, err := cgroup.Open(path)
	if err != nil {
		return
	}
	pids, err := cg.ProcsRecursive()
	if err != nil {
		return
	}
	if len(pids) > 0 {
		it.Action, it.Procs = GCSkipped, len(pids)
		it.Reason = fmt.Sprintf("no ownership record and %d processes: not touched (use 'snakepit kill %s')", len(pids), it.ID)
		add(it)
		return
	}
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	if age := time.Since(st.ModTime()); age < minAge {
		return // possibly being created right now
	}
	it.Reason = "no ownership record, empty"
	it.Action = GCWouldRemove
	if !dry {
		it.Action = GCRemoved
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := cg.Remove(rctx); err != nil {
			it.Action, it.Error = GCFailed, err.Error()
		} else if err := placement.ReleaseScope(rctx, path); err != nil {
			it.Action, it.Error = GCFailed, err.Error()
		}
	}
	add(it)
}

// gcTeardownStale tears down one stale run cgroup that holds processes
// (an empty one the caller removed by rmdir already).
func gcTeardownStale(ctx context.Context, it GCItem, path string, rec *record.Record, grace time.Duration) GCItem {
	// No stat first: ReadEvents says ErrNotExist for a run removed since.
	cg := cgroup.At(path)
	ev, err := cg.ReadEvents()
	if errors.Is(err, cgroup.ErrNotExist) {
		it.Action, it.Reason = GCSkipped, "run removed while gc looked"
		return it
	}
	var seen *cgroup.Events
	if err == nil {
		seen = &ev
	}
	if err != nil || ev.Populated {
		// Processes are about to be killed: first make sure the run judged
		// stale is still the one there (not removed by someone else and
		// re-created under the same ID by a live owner meanwhile). Empty
		// runs need no such check: GC rmdirs them right after reading their
		// record, and rmdir removes nothing that holds a process.
		again, err := record.ReadCgroup(path)
		if err != nil || !again.Owner.Same(rec.Owner) || !again.Created.Equal(rec.Created) {
			it.Action, it.Reason = GCSkipped, "record changed or run removed while gc looked"
			return it
		}
		if pids, err := cg.ProcsRecursive(); err == nil {
			it.Procs = len(pids)
		}
	}
	tctx, cancel := context.WithTimeout(ctx, grace+30*time.Second)
	defer cancel()
	tr, err := containment.TeardownGroupSeen(tctx, cg, grace, seen)
	it.Action = GCRemoved
	if err != nil {
		it.Action, it.Error = GCFailed, err.Error()
	}
	if tr.Vanished {
		it.Reason += " (removed by someone else meanwhile)"
	}
	return it
}

// runLiveness answers "is run id live?" for the scan. A run is live when
// its cgroup exists and either has no record (no evidence it is abandoned)
// or a record with a live owner, or when it has a POSIX record with a live
// owner. Answers are cached for one gc.
type runLiveness struct {
	parents []string
	stale   map[string]bool // runs this gc found stale (and tore down)
	mu      sync.Mutex
	cache   map[string]bool
}

func (l *runLiveness) live(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.cache[id]; ok {
		return v
	}
	v := l.judge(id)
	l.cache[id] = v
	return v
}

// liveProc judges a marked process: if it sits in a run cgroup
// (snakepit-<id>, under any parent, known or not, whatever ID its marker
// names), that run's record decides; otherwise its marker's run is looked
// up by ID. A marker is only a process's own words: a worker of a live run
// whose argv named a stale run was killed.
func (l *runLiveness) liveProc(m *reaper.Marked) bool {
	if p, err := cgroup.PathOf(m.PID); err == nil {
		if runs := RunCgroupsOn(p); len(runs) > 0 {
			run := runs[0]
			mnt, err := cgroup.FindMount()
			if err != nil {
				return true
			}
			rec, err := record.ReadCgroup(filepath.Join(mnt.Path, run))
			if err != nil {
				return true // no record (or unreadable): not ours to judge
			}
			return rec.Owner.Alive()
		}
	}
	return l.live(m.RunID)
}

// judge says whether run id is live, or not ours to judge. A marker alone
// is never evidence: a process whose run ID snakepit does not know (no
// run cgroup, no record, not a run this gc found stale) is left alone,
// whatever its argv or environment say.
func (l *runLiveness) judge(id string) bool {
	if l.stale[id] {
		return false
	}
	if g, err := Lookup(id, l.parents...); err == nil {
		rec, err := record.ReadCgroup(g.Path())
		if err != nil {
			return true // no record (or unreadable): not ours to judge
		}
		return rec.Owner.Alive()
	} else if !errors.Is(err, ErrUnknownRun) {
		return true
	}
	rec, err := record.Read(id)
	if err == nil {
		return rec.Owner.Alive()
	}
	return true // unknown or unreadable: not ours to judge
}

func gcMarked(ctx context.Context, o GCOptions, parents []string, only func(string) bool, doomed map[string]bool, rep *GCReport) error {
	lv := &runLiveness{parents: parents, stale: doomed, cache: map[string]bool{}}
	match := func(m *reaper.Marked) bool {
		return only(m.RunID) && !isSnakepitCLI(m) && !lv.liveProc(m)
	}
	reason := func(id string) string { return fmt.Sprintf("marked with run %s, which is stale", id) }
	if o.DryRun {
		ms, err := reaper.ListMarked(ctx)
		if err != nil {
			return err
		}
		for i := range ms {
			m := &ms[i]
			if match(m) && !doomed[m.RunID] {
				rep.Items = append(rep.Items, GCItem{Kind: "process", ID: m.RunID, PID: m.PID, Cmdline: m.Cmdline(),
					Reason: reason(m.RunID), Action: GCWouldKill})
			}
		}
		return nil
	}
	res, err := reaper.Sweep(ctx, match, o.Grace)
	if err != nil {
		return err
	}
	for _, r := range res {
		it := GCItem{Kind: "process", ID: r.RunID, PID: r.PID, Cmdline: r.Cmdline, Reason: reason(r.RunID), Outcome: string(r.Outcome)}
		switch r.Outcome {
		case reaper.OutcomeTerminated, reaper.OutcomeKilled:
			it.Action = GCKilled
		case reaper.OutcomeGone:
			continue // exited on its own before gc signalled it
		default:
			it.Action = GCFailed
			if r.Err != nil {
				it.Error = r.Err.Error()
			}
		}
		rep.Items = append(rep.Items, it)
	}
	return nil
}

// removeStaleGuardianLocks deletes guardian lock files nobody holds. A
// guardian racing us (opened the file, not yet locked) then locks an
// unlinked file: a later guardian of the same owner would not see it and
// watch too, which is harmless.
func removeStaleGuardianLocks() {
	dir := record.GuardianLockDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = os.Remove(p)
		}
		unix.Close(fd)
	}
}

// isSnakepitCLI reports whether a marked process is a snakepit command
// (e.g. `snakepit run --run-id X` itself) rather than a worker: its argv
// carries a run ID before that run exists, so it is never a target of a
// run-ID scan. One rule for every scan (posix.IsSnakepitCommand).
func isSnakepitCLI(m *reaper.Marked) bool {
	return posix.IsSnakepitProcess(m.PID, m.Exe, func() []string { return m.Argv })
}
