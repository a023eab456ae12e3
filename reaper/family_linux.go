//go:build linux

package reaper

import (
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

// Why a process was counted as a member of a Family.
const (
	WhyRoot       = "root"       // one of Family.Roots
	WhyMarker     = "marker"     // marked with the run ID (argv or environ)
	WhyOrphan     = "orphan"     // a child of Family.AdoptChildrenOf
	WhyGroup      = "pgid"       // in one of Family.PGIDs (a confirmed group)
	WhyDescendant = "descendant" // a descendant of any other member
)

// Family selects the processes of a run that has no cgroup (POSIX mode).
// Without a cgroup nothing the kernel keeps says which processes belong to a
// run, so membership is reconstructed from /proc on every call from what a
// process cannot easily shed, strongest first:
//
//   - Roots: the run's workers, by identity (PID + start time), and every
//     descendant of a member (by parent PID, transitively);
//   - the run-ID marker: --snakepit-run-id/--run-id in argv or
//     SNAKEPIT_RUN_ID in the environment (inherited unless scrubbed);
//   - AdoptChildrenOf: children of the subreaper that are not otherwise
//     explained, i.e. orphans re-parented to it (a double-forked daemon whose
//     parent exited);
//   - PGIDs: members of the run's process groups, but only of a group that
//     still holds some process attributed by another rule, or one of
//     Session started since NotBefore whose number does not name a live
//     process other than the group's leader (GroupLeaders): a group
//     number recycled after the group emptied pulls in strangers only if
//     its PID was recycled into the same session and that new leader has
//     exited too.
//
// What escapes: a process that calls setsid() (leaving the group), scrubs
// its argv and environment, and whose parent chain to a member breaks while
// no subreaper of the run is alive to adopt it (its parent exited while the
// supervisor was already dead). A PID namespace closes that hole.
type Family struct {
	// RunID, if set, makes marked processes members.
	RunID string
	// Roots are processes whose identity and descendants make members. A
	// root whose PID now names another process (start time differs) is
	// ignored.
	Roots []Identity
	// PGIDs are the run's process groups.
	PGIDs []int
	// Session, if HasSession, is the session the run's groups were made
	// in: a member of one of PGIDs in that session, started after
	// NotBefore, counts without another member to confirm its group (a
	// worker that cleared its environment and outlived the group's
	// leader). A group number recycled in that very session would need
	// its PID recycled into it, too. Session 0 is a session like any
	// other: init's, which a process tree that never called setsid()
	// keeps, or one whose leader is outside our PID namespace.
	Session    int
	HasSession bool
	// GroupLeaders are the start times of the leaders PGIDs were made by
	// (a group's number is its leader's PID), where known: a group whose
	// number names a live process of another start time is a later group
	// of that number, which the session rule does not take.
	GroupLeaders map[int]uint64
	// AdoptChildrenOf, if nonzero, is the PID of a subreaper all of whose
	// children (except Exclude) are members: set only by a supervisor that
	// knows it has no other children.
	AdoptChildrenOf int
	// Exclude are never members, nor are their descendants unless they are
	// members by another rule (the guardian, other runs' workers).
	Exclude map[int]bool
	// SkipArgvMarked, if set, is asked about processes whose argv carries
	// the marker: true means the argv marker does not count (snakepit's own
	// commands, e.g. `snakepit run --run-id X`, carry the ID but are the
	// run's owner, not its members). An environment marker still counts.
	SkipArgvMarked func(pid int) bool
	// NotBefore, if set, is when the run was created: a process started
	// more than startSlack before it cannot have inherited the run's marker,
	// so its argv and environment are not read (the marker rule only; the
	// other rules still apply). This skips most of the host's processes.
	NotBefore time.Time
	// Proc is the procfs mount; empty means /proc.
	Proc string
}

// startSlack covers the imprecision of converting a process start time
// (clock ticks after boot) to wall time: btime has one-second resolution and
// the wall clock may have been stepped since boot.
const startSlack = 5 * time.Second

// Member is one process of a Family, pinned: its pidfd was opened after it
// was found and its start time checked again, so signals through it can
// only reach this very process.
type Member struct {
	Identity
	PPID, PGID int
	Why        string
	pin        *Pinned
}

// Pinned returns the member's verified handle.
func (m *Member) Pinned() *Pinned { return m.pin }

// Close releases the pidfd.
func (m *Member) Close() error { return m.pin.Close() }

type procEntry struct {
	st  Stat
	why string
}

// Members walks /proc once and returns every live member, pinned. Zombies
// are not members (they are dead); the calling process and its ancestors
// never are. The caller closes the members.
func (f Family) Members(ctx context.Context) ([]Member, error) {
	procs, err := f.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var out []Member
	for pid, e := range procs {
		if e.why == "" {
			continue
		}
		p, err := Pin(Identity{PID: pid, Start: e.st.Start})
		if err != nil {
			continue // exited or reused since the walk: nothing to do
		}
		out = append(out, Member{Identity: p.Identity, PPID: e.st.PPID, PGID: e.st.PGID, Why: e.why, pin: p})
	}
	return out, nil
}

// snapshot reads every process and marks the members (why != "").
func (f Family) snapshot(ctx context.Context) (map[int]*procEntry, error) {
	proc := f.Proc
	if proc == "" {
		proc = "/proc"
	}
	d, err := os.Open(proc)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	skip := selfAndAncestors()
	roots := map[int]uint64{}
	for _, r := range f.Roots {
		roots[r.PID] = r.Start
	}
	groups := map[int]bool{}
	for _, g := range f.PGIDs {
		if g > 0 {
			groups[g] = true
		}
	}
	var oldTicks uint64 // processes started before this tick are skipped by the marker rule
	if !f.NotBefore.IsZero() {
		if bt, err := bootTime(proc); err == nil {
			if d := f.NotBefore.Add(-startSlack).Sub(bt); d > 0 {
				oldTicks = uint64(d / (time.Second / clockTicks))
			}
		}
	}
	procs := make(map[int]*procEntry, len(names))
	children := map[int][]int{}
	var buf [1024]byte
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(name)
		if err != nil || skip[pid] || f.Exclude[pid] {
			continue
		}
		n, err := kfile.Read(proc+"/"+name+"/stat", buf[:])
		if err != nil {
			continue
		}
		st, err := ParseStat(buf[:n])
		if err != nil || st.Dead() || st.PPID == 2 || pid == 2 {
			continue // zombie, or a kernel thread
		}
		e := &procEntry{st: st}
		switch {
		case roots[pid] != 0 && roots[pid] == st.Start:
			e.why = WhyRoot
		case f.AdoptChildrenOf != 0 && st.PPID == f.AdoptChildrenOf:
			e.why = WhyOrphan
		case f.RunID != "" && st.Start >= oldTicks && f.marked(proc+"/"+name, pid):
			e.why = WhyMarker
		}
		procs[pid] = e
		children[st.PPID] = append(children[st.PPID], pid)
	}
	// A group whose number is a live process's other than its leader's
	// is a later group of that number.
	later := map[int]bool{}
	for g, start := range f.GroupLeaders {
		if e := procs[g]; e != nil && e.st.Start != start {
			later[g] = true
		}
	}
	// Descendants and confirmed groups, to a fixed point: a descendant may
	// confirm a group whose members have descendants of their own.
	for changed := true; changed; {
		changed = false
		confirmed := map[int]bool{}
		for _, e := range procs {
			if !groups[e.st.PGID] {
				continue
			}
			// The session rule needs the start time known (oldTicks).
			bySession := f.HasSession && e.st.Session == f.Session && oldTicks > 0 && e.st.Start >= oldTicks && !later[e.st.PGID]
			if e.why != "" || bySession {
				confirmed[e.st.PGID] = true
			}
		}
		var stack []int
		for pid, e := range procs {
			if e.why == "" && confirmed[e.st.PGID] {
				e.why = WhyGroup
				changed = true
			}
			if e.why != "" {
				stack = append(stack, pid)
			}
		}
		for len(stack) > 0 {
			pid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, c := range children[pid] {
				if e := procs[c]; e != nil && e.why == "" {
					e.why = WhyDescendant
					changed = true
					stack = append(stack, c)
				}
			}
		}
	}
	return procs, nil
}

// marked reports whether the process in dir carries the run-ID marker.
func (f Family) marked(dir string, pid int) bool {
	if b, err := kfile.ReadAll(dir + "/cmdline"); err == nil {
		if got, err := runid.ExtractCmdline(b); err == nil && got == f.RunID {
			if f.SkipArgvMarked == nil || !f.SkipArgvMarked(pid) {
				return true
			}
		}
	}
	if b, err := kfile.ReadAll(dir + "/environ"); err == nil {
		if got, err := runid.ExtractEnviron(b); err == nil {
			return got == f.RunID
		}
	}
	return false
}

// clockTicks is USER_HZ, the unit of start times in /proc/PID/stat: 100 on
// every Linux architecture (the kernel converts to it for userspace).
const clockTicks = 100

// bootTime reads btime (boot time, seconds since the epoch) from /proc/stat.
func bootTime(proc string) (time.Time, error) {
	b, err := kfile.ReadAll(proc + "/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in " + proc + "/stat")
}

// FamilyReport says what Family.Kill did.
type FamilyReport struct {
	// Terminated counts processes that got SIGTERM.
	Terminated int
	// Killed counts processes that got SIGKILL.
	Killed int
	// Rounds counts /proc walks.
	Rounds int
	// Groups counts process-group signals sent.
	Groups int
}

// ErrSurvivors means processes of a family were still alive when the
// context ended.
var ErrSurvivors = errors.New("processes survived the teardown")

// SurvivorsError lists what was still alive.
type SurvivorsError struct {
	Left []Identity
	Err  error
}

func (e *SurvivorsError) Error() string {
	return fmt.Sprintf("%d process(es) still alive (%v): %v", len(e.Left), e.Err, e.Left)
}

// Unwrap returns ErrSurvivors and the context's error.
func (e *SurvivorsError) Unwrap() []error { return []error{ErrSurvivors, e.Err} }

// rescan bounds how long a wait on pidfds runs before /proc is walked again:
// the kernel has no notification for "a member forked", so new members are
// found by walking again (a bounded poll that backs off).
const (
	rescanMin  = 2 * time.Millisecond
	killRescan = 50 * time.Millisecond
	rescanMax  = 100 * time.Millisecond
)

// Kill ends the family: SIGTERM to every member (through its pidfd) and to
// every confirmed process group, up to grace for them to exit while new
// members are looked for and get SIGTERM too, then SIGKILL the same way,
// repeated until a walk of /proc finds no member. A member that forks while
// being killed only adds to the next round; killed processes cannot fork,
// so the rounds converge. grace <= 0 skips SIGTERM. Children of ours among
// the members (not Roots: their owners wait for those) are reaped through
// their pidfd, so no zombie is left even without a wait4(-1) loop. It
// returns a *SurvivorsError when ctx ends first.
func (f Family) Kill(ctx context.Context, grace time.Duration) (FamilyReport, error) {
	return f.KillWith(ctx, grace, unix.SIGTERM)
}

// KillWith is Kill with stop in place of SIGTERM as the first signal.
func (f Family) KillWith(ctx context.Context, grace time.Duration, stop unix.Signal) (FamilyReport, error) {
	var rep FamilyReport
	k := killer{f: f, pins: map[Identity]*Pinned{}, sent: map[Identity]unix.Signal{}, groups: map[int]unix.Signal{}}
	for _, r := range f.Roots {
		k.roots = append(k.roots, r.PID)
	}
	defer k.close()
	if grace > 0 {
		// The grace period bounds the waiting, never a walk: a walk that
		// takes longer than the grace on a loaded host must still send
		// the SIGTERMs it found reasons for.
		done, err := k.rounds(ctx, time.Now().Add(grace), stop, &rep)
		if done || err != nil {
			return rep, err
		}
	}
	done, err := k.rounds(ctx, time.Time{}, unix.SIGKILL, &rep)
	if !done && err == nil {
		err = ctx.Err()
	}
	return rep, err
}

type killer struct {
	f      Family
	roots  []int
	pins   map[Identity]*Pinned
	sent   map[Identity]unix.Signal
	groups map[int]unix.Signal
}

func (k *killer) close() {
	for _, p := range k.pins {
		k.reap(p)
		p.Close()
	}
}

// reap collects p if it has exited and is a child of ours (it may have
// become one by re-parenting after it was found) that no one else waits for:
// not a root, whose owner waits for it. ECHILD (not our child, or already
// reaped) is fine.
func (k *killer) reap(p *Pinned) {
	if p.fd < 0 || k.isRoot(p.PID) || !p.Exited() {
		return
	}
	var info unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, p.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
}

// rounds walks /proc, signals new members with sig and waits for them,
// until a walk finds nobody (done), the phase deadline passes (zero: none;
// done false, err nil) or ctx ends (a *SurvivorsError).
func (k *killer) rounds(ctx context.Context, deadline time.Time, sig unix.Signal, rep *FamilyReport) (done bool, err error) {
	wait := rescanMin
	if sig == unix.SIGKILL {
		// Killed processes cannot fork any more and the wait returns as
		// soon as all of them are gone: wait longer before walking again.
		wait = killRescan
	}
	for {
		ms, err := k.f.Members(ctx)
		rep.Rounds++
		if err != nil {
			if ctx.Err() != nil {
				return false, k.survivors(ctx)
			}
			return false, err
		}
		if len(ms) == 0 {
			return true, nil
		}
		var live []*Pinned
		fresh := false
		for i := range ms {
			m := &ms[i]
			p := k.pins[m.Identity]
			if p == nil {
				p = m.pin
				k.pins[m.Identity] = p
			} else {
				m.pin.Close()
			}
			if k.sent[m.Identity] != sig {
				if err := p.Signal(sig); err == nil {
					k.sent[m.Identity] = sig
					fresh = true
					if sig == unix.SIGKILL {
						rep.Killed++
					} else {
						rep.Terminated++
					}
				}
			}
			live = append(live, p)
			if g := m.PGID; k.confirmedGroup(g) && k.groups[g] != sig {
				// The group holds a pinned member right now, so its number
				// cannot have been recycled.
				if unix.Kill(-g, sig) == nil {
					rep.Groups++
				}
				k.groups[g] = sig
			}
		}
		if fresh && sig != unix.SIGKILL {
			wait = rescanMin
		}
		w := wait
		if !deadline.IsZero() {
			if left := time.Until(deadline); left < w {
				w = max(left, 0)
			}
		}
		wctx, cancel := context.WithTimeout(ctx, w)
		WaitExited(wctx, live)
		cancel()
		for _, p := range live {
			k.reap(p)
		}
		if err := ctx.Err(); err != nil {
			return false, k.survivors(ctx)
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			// One last look: everyone may have gone at the deadline.
			ms, err := k.f.Members(ctx)
			if err == nil && len(ms) == 0 {
				return true, nil
			}
			for i := range ms {
				ms[i].Close()
			}
			return false, nil
		}
		if wait < rescanMax {
			wait *= 2
		}
	}
}

func (k *killer) confirmedGroup(g int) bool {
	for _, x := range k.f.PGIDs {
		if x == g && g > 0 {
			return true
		}
	}
	return false
}

func (k *killer) isRoot(pid int) bool {
	for _, r := range k.roots {
		if r == pid {
			return true
		}
	}
	return false
}

func (k *killer) survivors(ctx context.Context) error {
	var left []Identity
	for id, p := range k.pins {
		if !p.Exited() {
			left = append(left, id)
		}
	}
	return &SurvivorsError{Left: left, Err: ctx.Err()}
}
