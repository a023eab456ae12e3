//go:build linux

package reaper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"

	"github.com/snakepit/snakepit/runid"
)

// Where a run-ID marker was found.
const (
	SourceArgv    = "argv"
	SourceEnviron = "environ"
)

// Marked is a process that carries a run-ID marker: "--snakepit-run-id X",
// "--run-id X" (or "=X") in its argv, or SNAKEPIT_RUN_ID=X in its
// environment. A Marked from ScanMarked is pinned: a pidfd was opened at
// scan time and the start time re-verified after opening it, so Signal can
// only ever reach this very process. Close releases the pidfd.
type Marked struct {
	Identity
	RunID  string
	Source string // SourceArgv or SourceEnviron
	Argv   []string
	// Exe is the target of /proc/PID/exe ("" when unreadable).
	Exe string
	// PPID and PGID are as read at scan time.
	PPID, PGID int

	pin *Pinned
}

// Cmdline is Argv joined by spaces, for reports.
func (m *Marked) Cmdline() string { return strings.Join(m.Argv, " ") }

// Pinned returns the verified handle, or nil for an unpinned Marked (from
// ListMarked, or whose pin failed).
func (m *Marked) Pinned() *Pinned { return m.pin }

// Signal sends sig through the pinned pidfd.
func (m *Marked) Signal(sig unix.Signal) error {
	if m.pin == nil {
		return fmt.Errorf("pid %d: not pinned, refusing to signal", m.PID)
	}
	return m.pin.Signal(sig)
}

// Close releases the pidfd, if any.
func (m *Marked) Close() error { return m.pin.Close() }

// CloseAll closes every Marked in ms.
func CloseAll(ms []Marked) {
	for i := range ms {
		_ = ms[i].Close()
	}
}

// ScanOptions narrow a scan.
type ScanOptions struct {
	// RunIDs, when non-empty, keeps only processes marked with these IDs.
	RunIDs []string
	// NoPin skips opening pidfds: the result is for display only and
	// cannot be signalled.
	NoPin bool
	// Proc is the procfs mount; empty means /proc.
	Proc string
}

// ScanMarked finds every marked process on the host and pins each one. The
// calling process and its ancestors are never returned (a tool must not kill
// the shell that runs it). Zombies are skipped: they are already dead.
func ScanMarked(ctx context.Context) ([]Marked, error) {
	return Scan(ctx, ScanOptions{})
}

// ListMarked is ScanMarked without pidfds, for display.
func ListMarked(ctx context.Context) ([]Marked, error) {
	return Scan(ctx, ScanOptions{NoPin: true})
}

// Scan walks /proc once. For every process it reads stat (identity),
// cmdline and, only if argv has no marker, environ. A marked process is
// then pinned (unless NoPin): pidfd_open, then the start time is read again
// and must equal the first read, otherwise the PID changed hands during the
// scan and the process is left out.
func Scan(ctx context.Context, o ScanOptions) ([]Marked, error) {
	proc := o.Proc
	if proc == "" {
		proc = "/proc"
	}
	want := map[string]bool{}
	for _, id := range o.RunIDs {
		want[id] = true
	}
	skip := selfAndAncestors()
	d, err := os.Open(proc)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var out []Marked
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			CloseAll(out)
			return nil, err
		}
		pid, err := strconv.Atoi(name)
		if err != nil || skip[pid] {
			continue
		}
		m, ok := inspect(proc, pid)
		if !ok || (len(want) > 0 && !want[m.RunID]) {
			continue
		}
		if !o.NoPin {
			p, err := Pin(m.Identity)
			if err != nil {
				continue // gone or reused since we read it: not ours to touch
			}
			m.pin = p
		}
		out = append(out, m)
	}
	return out, nil
}

// inspect reads one process; ok is false when it is not marked, is a
// zombie or vanished meanwhile.
func inspect(proc string, pid int) (Marked, bool) {
	dir := proc + "/" + strconv.Itoa(pid)
	raw, err := kfile.ReadAll(dir + "/stat")
	if err != nil {
		return Marked{}, false
	}
	st, err := ParseStat(raw)
	if err != nil || st.Dead() {
		return Marked{}, false
	}
	cmdline, err := kfile.ReadAll(dir + "/cmdline")
	if err != nil || len(cmdline) == 0 {
		return Marked{}, false // kernel thread, or gone
	}
	m := Marked{Identity: Identity{PID: pid, Start: st.Start}, PPID: st.PPID, PGID: st.PGID, Argv: splitNUL(cmdline)}
	if id, err := runid.ExtractCmdline(cmdline); err == nil {
		m.RunID, m.Source = id, SourceArgv
	} else if env, err := kfile.ReadAll(dir + "/environ"); err == nil {
		if id, err := runid.ExtractEnviron(env); err == nil {
			m.RunID, m.Source = id, SourceEnviron
		}
	}
	if m.RunID == "" {
		return Marked{}, false
	}
	m.Exe, _ = os.Readlink(dir + "/exe")
	return m, true
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	parts := bytes.Split(b, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// selfAndAncestors returns our PID and those of all our ancestors.
func selfAndAncestors() map[int]bool {
	m := map[int]bool{}
	pid := os.Getpid()
	for pid > 0 && !m[pid] {
		m[pid] = true
		st, err := ReadStat(pid)
		if err != nil {
			break
		}
		pid = st.PPID
	}
	return m
}

// Outcome says what happened to one process in KillMarked.
type Outcome string

const (
	// OutcomeGone: it had already exited before the first signal.
	OutcomeGone Outcome = "gone"
	// OutcomeTerminated: it exited within the grace period after SIGTERM.
	OutcomeTerminated Outcome = "terminated"
	// OutcomeKilled: it was SIGKILLed and exited.
	OutcomeKilled Outcome = "killed"
	// OutcomeSurvived: still alive when the wait after SIGKILL ended
	// (uninterruptible sleep, or ctx ended).
	OutcomeSurvived Outcome = "survived"
	// OutcomeRefused: not pinned or its identity no longer verified; not
	// signalled.
	OutcomeRefused Outcome = "refused"
)

// Result is one process's fate in KillMarked.
type Result struct {
	Identity
	RunID   string
	Cmdline string
	Outcome Outcome
	Err     error `json:"-"`
}

// killWait bounds the wait for SIGKILLed processes to exit.
const killWait = 2 * time.Second

// KillMarked ends the given processes with escalation: SIGTERM through each
// pidfd, up to grace for them to exit (poll on the pidfds), SIGKILL through
// the pidfd to the rest, and a bounded wait. grace <= 0 skips SIGTERM.
// Nothing is ever sent by PID: a process that exited and whose PID was
// reused is reported gone and its successor is untouched. The caller still
// owns (and closes) ms.
func KillMarked(ctx context.Context, ms []Marked, grace time.Duration) []Result {
	return killMarked(ctx, ms, grace, nil)
}

// killMarked is KillMarked; afterFirst, if set, runs right after the first
// signal went out (Sweep resumes stopped processes there).
func killMarked(ctx context.Context, ms []Marked, grace time.Duration, afterFirst func()) []Result {
	res := make([]Result, len(ms))
	var live []*Pinned
	idx := map[*Pinned]int{}
	for i := range ms {
		m := &ms[i]
		res[i] = Result{Identity: m.Identity, RunID: m.RunID, Cmdline: m.Cmdline()}
		if m.pin == nil {
			res[i].Outcome, res[i].Err = OutcomeRefused, errors.New("not pinned")
			continue
		}
		if m.pin.Dying() {
			// Already exiting (e.g. killed by its own run's teardown since
			// the scan): not ours to report as killed.
			res[i].Outcome = OutcomeGone
			continue
		}
		sig := unix.SIGKILL
		if grace > 0 {
			sig = unix.SIGTERM
		}
		if err := m.pin.Signal(sig); err != nil {
			if errors.Is(err, ErrNoProcess) {
				res[i].Outcome = OutcomeGone
			} else {
				res[i].Outcome, res[i].Err = OutcomeRefused, err
			}
			continue
		}
		live = append(live, m.pin)
		idx[m.pin] = i
	}
	if afterFirst != nil {
		afterFirst()
	}
	if grace > 0 && len(live) > 0 {
		gctx, cancel := context.WithTimeout(ctx, grace)
		rest := WaitExited(gctx, live)
		cancel()
		restSet := map[*Pinned]bool{}
		for _, p := range rest {
			restSet[p] = true
		}
		for _, p := range live {
			if !restSet[p] {
				res[idx[p]].Outcome = OutcomeTerminated
			}
		}
		live = rest
		for _, p := range live {
			if err := p.Signal(unix.SIGKILL); err != nil && errors.Is(err, ErrNoProcess) {
				res[idx[p]].Outcome = OutcomeTerminated
			}
		}
	}
	if len(live) == 0 {
		return res
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killWait)
	rest := WaitExited(kctx, live)
	cancel()
	restSet := map[*Pinned]bool{}
	for _, p := range rest {
		restSet[p] = true
	}
	for _, p := range live {
		i := idx[p]
		if res[i].Outcome != "" {
			continue
		}
		if restSet[p] {
			res[i].Outcome = OutcomeSurvived
		} else {
			res[i].Outcome = OutcomeKilled
		}
	}
	return res
}

// maxStopRounds bounds how often Sweep rescans while stopping a fork storm.
const maxStopRounds = 50

// Sweep kills every marked process for which match returns true, including
// ones forked while it works: it SIGSTOPs each match (stopped processes
// cannot fork) and rescans until a scan finds no new match, then SIGTERMs
// and SIGCONTs them all, waits up to grace, and SIGKILLs the rest; a final
// scan SIGKILLs stragglers. match nil means every marked process.
func Sweep(ctx context.Context, match func(*Marked) bool, grace time.Duration) ([]Result, error) {
	var all []Marked
	defer func() { CloseAll(all) }()
	seen := map[Identity]bool{}
	scan := func() (int, error) {
		ms, err := ScanMarked(ctx)
		if err != nil {
			return 0, err
		}
		added := 0
		for i := range ms {
			m := ms[i]
			if seen[m.Identity] || (match != nil && !match(&m)) {
				_ = m.Close()
				continue
			}
			seen[m.Identity] = true
			_ = m.Signal(unix.SIGSTOP)
			all = append(all, m)
			added++
		}
		return added, nil
	}
	for round := 0; round < maxStopRounds; round++ {
		n, err := scan()
		if err != nil {
			contAll(all)
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	// SIGTERM is queued while a process is stopped and handled on SIGCONT;
	// SIGKILL needs no SIGCONT but gets one anyway (harmless).
	res := killMarked(ctx, all, grace, func() { contAll(all) })
	// Anything that slipped in after the last stop round: no grace.
	var late []Marked
	for i := range all {
		seen[all[i].Identity] = true
	}
	if ms, err := ScanMarked(context.WithoutCancel(ctx)); err == nil {
		for i := range ms {
			m := ms[i]
			if seen[m.Identity] || (match != nil && !match(&m)) {
				_ = m.Close()
				continue
			}
			late = append(late, m)
		}
		res = append(res, KillMarked(ctx, late, 0)...)
		CloseAll(late)
	}
	return res, nil
}

func contAll(ms []Marked) {
	for i := range ms {
		_ = ms[i].Signal(unix.SIGCONT)
	}
}
