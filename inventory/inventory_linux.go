//go:build linux

package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/internal/kfile"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/posix"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// ProcInfo is one process of a run.
type ProcInfo struct {
	PID     int    `json:"pid"`
	Cmdline string `json:"cmdline"`
}

// RunInfo describes one run on the host, as `snakepit ps` shows it.
type RunInfo struct {
	ID        string `json:"id"`
	Mechanism string `json:"mechanism"`
	// Cgroup is the run cgroup's path; "" for POSIX runs.
	Cgroup string `json:"cgroup"`
	// OwnerPID is the recorded owner, 0 when the run has no record.
	OwnerPID    int    `json:"owner_pid"`
	OwnerAlive  bool   `json:"owner_alive"`
	OwnerStatus string `json:"owner_status"`
	HasRecord   bool   `json:"has_record"`
	// Procs is the number of live processes in the run.
	Procs      int       `json:"procs"`
	AgeSeconds float64   `json:"age_seconds"`
	Created    time.Time `json:"created"`
	// GuardianPID is the guardian recorded for the run's owner, if any.
	GuardianPID int `json:"guardian_pid,omitempty"`
	// Processes lists the run's processes when asked for (ListOptions.Tree);
	// null otherwise.
	Processes []ProcInfo `json:"processes"`
	// Stats are the run cgroup's usage counters (limits_linux.go); nil for
	// POSIX runs.
	Stats *limits.Stats `json:"stats,omitempty"`

	Record *record.Record `json:"-"`
}

// ListOptions configure ListRuns.
type ListOptions struct {
	// Tree fills RunInfo.Processes.
	Tree bool
	// Parents are cgroup parents to search besides KnownParents().
	Parents []string
}

// ListRuns returns every run on the host: run cgroups under the known
// parents (with or without a record) and POSIX runs with a file record,
// sorted by creation time. The daemon serves the same data over its socket.
func ListRuns(ctx context.Context, o ListOptions) ([]RunInfo, error) {
	now := time.Now()
	runs, err := ListRunCgroups(KnownParents(o.Parents...)...)
	if err != nil {
		return nil, err
	}
	var out []RunInfo
	for id, path := range runs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ri, err := cgroupRunInfo(id, path, now, o.Tree)
		if errors.Is(err, cgroup.ErrNotExist) || errors.Is(err, fs.ErrNotExist) {
			continue // removed while we looked
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ri)
	}
	recs, err := record.List()
	if err != nil {
		return nil, err
	}
	var marked []reaper.Marked
	scanned := false
	for _, rec := range recs {
		if rec.Mechanism != record.MechanismPOSIX {
			continue // cgroup runs are listed from their cgroups
		}
		if !scanned {
			marked, _ = reaper.ListMarked(ctx)
			scanned = true
		}
		ri := RunInfo{ID: rec.ID, Mechanism: record.MechanismPOSIX}
		fillFromRecord(&ri, rec, now)
		var procs []ProcInfo
		for i := range marked {
			m := &marked[i]
			if m.RunID == rec.ID && !isSnakepitCLI(m) {
				procs = append(procs, ProcInfo{PID: m.PID, Cmdline: m.Cmdline()})
			}
		}
		ri.Procs = len(procs)
		if o.Tree {
			ri.Processes = nonNil(procs)
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func nonNil(p []ProcInfo) []ProcInfo {
	if p == nil {
		return []ProcInfo{}
	}
	return p
}

func fillFromRecord(ri *RunInfo, rec *record.Record, now time.Time) {
	ri.Record = rec
	ri.HasRecord = true
	ri.OwnerPID = rec.Owner.PID
	ri.OwnerAlive, ri.OwnerStatus = rec.Owner.Check()
	ri.Created = rec.Created
	ri.AgeSeconds = now.Sub(rec.Created).Seconds()
	if rec.Guardian != nil {
		ri.GuardianPID = rec.Guardian.PID
	}
}

// cgroupRunInfo describes the run cgroup at path.
func cgroupRunInfo(id, path string, now time.Time, tree bool) (RunInfo, error) {
	ri := RunInfo{ID: id, Mechanism: record.MechanismCgroup, Cgroup: path}
	rec, err := record.ReadCgroup(path)
	switch {
	case err == nil:
		fillFromRecord(&ri, rec, now)
	case errors.Is(err, record.ErrNoRecord):
		ri.OwnerStatus = "no ownership record"
		st, serr := os.Stat(path)
		if serr != nil {
			return ri, serr
		}
		ri.Created = st.ModTime().UTC()
		ri.AgeSeconds = now.Sub(ri.Created).Seconds()
	default:
		return ri, err
	}
	cg, err := cgroup.Open(path)
	if err != nil {
		return ri, err
	}
	pids, err := cg.ProcsRecursive()
	if err != nil {
		return ri, err
	}
	ri.Procs = len(pids)
	if st, err := limits.ReadStats(cg); err == nil {
		ri.Stats = &st
	}
	if tree {
		procs := make([]ProcInfo, 0, len(pids))
		for _, pid := range pids {
			procs = append(procs, ProcInfo{PID: pid, Cmdline: Cmdline(pid)})
		}
		ri.Processes = procs
	}
	return ri, nil
}

// Cmdline returns process pid's command line joined by spaces, "[comm]" for
// a process without one (kernel thread, zombie), "" if it is gone.
func Cmdline(pid int) string {
	b, err := kfile.ReadAll("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err == nil && len(b) > 0 {
		return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
	}
	if st, err := reaper.ReadStat(pid); err == nil {
		return "[" + st.Comm + "]"
	}
	return ""
}

// KillRun tears down run id from outside its owner (`snakepit kill`): a
// cgroup run under the known parents (plus parents) through TeardownGroup,
// else a POSIX run with a file record through TeardownPOSIX. grace < 0
// means the run's recorded grace (spec.DefaultGrace without a record). An
// invalid ID yields runid.ErrInvalid before any filesystem access; an
// unknown one ErrUnknownRun.
func KillRun(ctx context.Context, id string, grace time.Duration, parents ...string) (containment.Report, error) {
	if err := runid.Validate(id); err != nil {
		return containment.Report{}, err
	}
	g, err := Lookup(id, KnownParents(parents...)...)
	if err == nil {
		if grace < 0 {
			grace = spec.DefaultGrace
			// A recorded 0 is the default, as in the spec: one that
			// was taken for "no grace" skipped the SIGTERM of a run
			// made without --grace.
			if rec, err := record.ReadCgroup(g.Path()); err == nil && rec.Grace > 0 {
				grace = rec.Grace
			}
		}
		rep, err := containment.TeardownGroup(ctx, g, grace)
		if rec, rerr := record.Read(id); rerr == nil && rec.Mechanism == record.MechanismCgroup {
			_ = record.Remove(id) // xattr-less fallback record
		}
		if rep.Vanished {
			// Removed by someone else between lookup and teardown.
			return rep, nil
		}
		return rep, err
	}
	if !errors.Is(err, ErrUnknownRun) {
		return containment.Report{}, err
	}
	rec, rerr := record.Read(id)
	if rerr == nil && rec.Mechanism == record.MechanismPOSIX {
		if grace < 0 {
			grace = spec.DefaultGrace
			if rec.Grace > 0 {
				grace = rec.Grace
			}
		}
		return posix.TeardownRecord(ctx, rec, grace)
	}
	if rerr != nil && !errors.Is(rerr, record.ErrNoRecord) {
		return containment.Report{}, rerr
	}
	return containment.Report{}, fmt.Errorf("%w: %s (no run cgroup under %s, no record in %s)",
		ErrUnknownRun, id, strings.Join(KnownParents(parents...), ", "), record.Dir())
}

// OwnedTeardown is one run torn down for a dead owner.
type OwnedTeardown struct {
	ID     string
	Report containment.Report
	Err    error
}

// TeardownOwned tears down, concurrently and with grace, every run whose
// record names owner: cgroup runs under KnownParents(parents...) and POSIX
// runs with a file record.
func TeardownOwned(ctx context.Context, owner record.Owner, grace time.Duration, parents ...string) ([]OwnedTeardown, error) {
	runs, err := ListRunCgroups(KnownParents(parents...)...)
	if err != nil {
		return nil, err
	}
	var (
		mu  sync.Mutex
		out []OwnedTeardown
		wg  sync.WaitGroup
	)
	add := func(t OwnedTeardown) {
		mu.Lock()
		out = append(out, t)
		mu.Unlock()
	}
	for id, path := range runs {
		rec, err := record.ReadCgroup(path)
		if err != nil || !rec.Owner.Same(owner) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cg, err := cgroup.Open(path)
			if err != nil {
				if errors.Is(err, cgroup.ErrNotExist) {
					return // torn down meanwhile
				}
				add(OwnedTeardown{ID: id, Err: err})
				return
			}
			rep, err := containment.TeardownGroup(ctx, cg, grace)
			if err == nil {
				// A file record (no user xattrs on this cgroupfs) goes
				// with its run.
				err = record.Remove(id)
			}
			add(OwnedTeardown{ID: id, Report: rep, Err: err})
		}()
	}
	recs, _ := record.List()
	for _, rec := range recs {
		if rec.Mechanism != record.MechanismPOSIX || !rec.Owner.Same(owner) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := posix.TeardownRecord(ctx, rec, grace)
			add(OwnedTeardown{ID: rec.ID, Report: rep, Err: err})
		}()
	}
	wg.Wait()
	var errs []error
	for _, t := range out {
		if t.Err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", t.ID, t.Err))
		}
	}
	return out, errors.Join(errs...)
}
