//go:build linux

package reaper

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/runid"
)

// These tests need no root: they only touch processes they start.

// startTree starts sh -c script with env (plus ours), reads one line per
// expected process ("pid") from its stdout, pins all of them and registers
// a cleanup that SIGKILLs and reaps everything. The shell reports the PIDs
// of what it starts with `echo $!` / `echo $$`.
func startTree(t *testing.T, env []string, attr *syscall.SysProcAttr, n int, script string) (*exec.Cmd, []*Pinned) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = attr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var pins []*Pinned
	t.Cleanup(func() {
		for _, p := range pins {
			_ = p.Signal(unix.SIGKILL)
		}
		_ = cmd.Process.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if rest := WaitExited(ctx, pins); len(rest) > 0 {
			t.Errorf("cleanup: %d processes survive SIGKILL", len(rest))
		}
		<-done
		for _, p := range pins {
			reapIfChild(p)
			p.Close()
		}
	})
	sc := bufio.NewScanner(out)
	for i := 0; i < n && sc.Scan(); i++ {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("bad pid line %q", sc.Text())
		}
		id, err := IdentityOf(pid)
		if err != nil {
			t.Fatalf("pid %d: %v", pid, err)
		}
		p, err := Pin(id)
		if err != nil {
			t.Fatal(err)
		}
		pins = append(pins, p)
	}
	if len(pins) != n {
		t.Fatalf("got %d pids, want %d", len(pins), n)
	}
	return cmd, pins
}

// reapIfChild collects p if it is an exited child of ours (an orphan
// re-parented to us would otherwise stay a zombie).
func reapIfChild(p *Pinned) {
	if p.fd >= 0 {
		var info unix.Siginfo
		_ = unix.Waitid(unix.P_PIDFD, p.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	}
}

func memberPIDs(t *testing.T, f Family) []int {
	t.Helper()
	ms, err := f.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for i := range ms {
		out = append(out, ms[i].PID)
		ms[i].Close()
	}
	sort.Ints(out)
	return out
}

func pidsOf(ps ...*Pinned) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.PID)
	}
	sort.Ints(out)
	return out
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFamilyRootsAndDescendants(t *testing.T) {
	cmd, ps := startTree(t, nil, nil, 3, `echo $$; sleep 1000 & echo $!; sh -c 'echo $$; exec sleep 1000' & wait`)
	root, err := IdentityOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := memberPIDs(t, Family{Roots: []Identity{root}}), pidsOf(ps...); !equal(got, want) {
		t.Fatalf("members %v, want root and its descendants %v", got, want)
	}
	// A root whose PID now names another process is no root.
	stale := Identity{PID: root.PID, Start: root.Start + 1}
	if got := memberPIDs(t, Family{Roots: []Identity{stale}}); len(got) != 0 {
		t.Fatalf("a root with the wrong start time matched %v", got)
	}
	// Excluded processes and their subtrees are out.
	if got := memberPIDs(t, Family{Roots: []Identity{root}, Exclude: map[int]bool{ps[2].PID: true}}); !equal(got, pidsOf(ps[0], ps[1])) {
		t.Fatalf("with %d excluded: members %v", ps[2].PID, got)
	}
}

func TestFamilyMarker(t *testing.T) {
	id, other := runid.Generate(), runid.Generate()
	_, mine := startTree(t, []string{runid.EnvVar + "=" + id}, nil, 2, `echo $$; sleep 1000 & echo $!; wait`)
	_, theirs := startTree(t, []string{runid.EnvVar + "=" + other}, nil, 1, `echo $$; exec sleep 1000`)
	// argv-marked: a shell whose argv carries the marker, with an
	// unmarked sleep child (a member as its descendant).
	_, argv := startTree(t, nil, nil, 2, `echo $$; exec sh -c 'sleep 1000 & echo $!; wait' sh `+runid.Flag+`=`+id)
	f := Family{RunID: id}
	if got, want := memberPIDs(t, f), pidsOf(mine[0], mine[1], argv[0], argv[1]); !equal(got, want) {
		t.Fatalf("members %v: want %v (environ), %d (argv) and its child %d, not %d (run %s)",
			got, pidsOf(mine...), argv[0].PID, argv[1].PID, theirs[0].PID, other)
	}
	// An argv marker can be vetoed (snakepit's own commands); the
	// environment marker still counts.
	f.SkipArgvMarked = func(pid int) bool { return true }
	if got, want := memberPIDs(t, f), pidsOf(mine...); !equal(got, want) {
		t.Fatalf("with argv markers skipped: members %v, want %v", got, want)
	}
	// Processes started well before the run cannot carry its marker and
	// are not read.
	f = Family{RunID: id, NotBefore: time.Now().Add(time.Minute)}
	if got := memberPIDs(t, f); len(got) != 0 {
		t.Fatalf("processes older than NotBefore-%v matched: %v", startSlack, got)
	}
}

// A process group counts only while it holds a process found otherwise.
func TestFamilyConfirmedGroup(t *testing.T) {
	id := runid.Generate()
	cmd, ps := startTree(t, nil, &syscall.SysProcAttr{Setpgid: true}, 2,
		`echo $$; sh -c 'echo $$; exec sleep 1000' & wait`)
	pgid := cmd.Process.Pid
	// The group exists but nothing in it is attributed: no members.
	if got := memberPIDs(t, Family{RunID: id, PGIDs: []int{pgid}}); len(got) != 0 {
		t.Fatalf("an unconfirmed group gave members %v", got)
	}
	// A marked process joins the group (setpgid from its parent is not
	// possible here, so start one in the group directly).
	marked := exec.Command("/bin/sleep", "1000")
	marked.Env = append(os.Environ(), runid.EnvVar+"="+id)
	marked.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
	if err := marked.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = marked.Process.Kill(); _ = marked.Wait() })
	want := append(pidsOf(ps...), marked.Process.Pid)
	sort.Ints(want)
	if got := memberPIDs(t, Family{RunID: id, PGIDs: []int{pgid}}); !equal(got, want) {
		t.Fatalf("members %v, want the whole confirmed group %v", got, want)
	}
}

// Kill ends a hostile family: a SIGTERM-ignorer, a setsid'd orphan and a
// process forking as fast as it can, all found by marker and adoption; our
// orphaned children are reaped (no zombie left).
func TestFamilyKill(t *testing.T) {
	id := runid.Generate()
	env := []string{runid.EnvVar + "=" + id}
	// Orphans of the shell below are re-parented to us as subreaper.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	sh, ps := startTree(t, env, nil, 4, `
		sh -c 'trap "" TERM; echo $$; exec sleep 1000' &
		setsid sh -c 'echo $$; exec sleep 1000' &
		sh -c 'echo $$; i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done; wait' &
		echo $$; wait`)
	f := Family{RunID: id, AdoptChildrenOf: os.Getpid()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	rep, err := f.Kill(ctx, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("Kill: %v (report %+v)", err, rep)
	}
	took := time.Since(t0)
	for _, p := range ps {
		if !p.Exited() {
			t.Errorf("pid %d survived", p.PID)
		}
	}
	if got := memberPIDs(t, f); len(got) != 0 {
		t.Fatalf("members left after Kill: %v", got)
	}
	if rep.Killed == 0 || rep.Terminated == 0 {
		t.Errorf("report %+v: want SIGTERMs and, for the ignorer and the forker's children, SIGKILLs", rep)
	}
	t.Logf("Kill: %+v in %v", rep, took)
	// No zombie of ours is left among the orphans.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pid == sh.Process.Pid {
			continue // reaped by its exec.Cmd
		}
		if st, err := ReadStat(pid); err == nil && st.PPID == os.Getpid() && st.Dead() {
			if m, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); len(m) == 0 {
				t.Errorf("zombie child %d left after Kill", pid)
			}
		}
	}
}

// A context that ends while a process survives SIGKILL's wait yields a
// SurvivorsError; a stopped process still dies of SIGKILL, so use a
// context that is already done.
func TestFamilyKillCancelled(t *testing.T) {
	id := runid.Generate()
	startTree(t, []string{runid.EnvVar + "=" + id}, nil, 1, `echo $$; exec sleep 1000`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Family{RunID: id}.Kill(ctx, time.Second)
	if err == nil {
		t.Fatal("Kill with a cancelled context reported success")
	}
}

// The session rule takes an unattributed group of the run's session whose
// processes started after the run, unless its number names a live process
// other than the leader it was made by: a later group of that number.
func TestFamilySessionRule(t *testing.T) {
	self, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	id := runid.Generate()
	notBefore := time.Now().Add(-time.Second)
	cmd, ps := startTree(t, nil, &syscall.SysProcAttr{Setpgid: true}, 2,
		`echo $$; sh -c 'echo $$; exec sleep 1000' & wait`)
	pgid := cmd.Process.Pid
	leader := ps[0].Identity
	f := Family{RunID: id, PGIDs: []int{pgid}, NotBefore: notBefore, Session: self.Session, HasSession: true,
		GroupLeaders: map[int]uint64{pgid: leader.Start}}
	if got, want := memberPIDs(t, f), pidsOf(ps...); !equal(got, want) {
		t.Fatalf("members %v, want the group of our session %v", got, want)
	}
	// Another session's group is not taken.
	other := f
	other.Session++
	if got := memberPIDs(t, other); len(got) != 0 {
		t.Fatalf("another session: members %v", got)
	}
	// Nor is a group whose number names a live process of another start
	// time than its leader's.
	later := f
	later.GroupLeaders = map[int]uint64{pgid: leader.Start - 1}
	if got := memberPIDs(t, later); len(got) != 0 {
		t.Fatalf("a later group of the number: members %v", got)
	}
}

// fakeProc writes a procfs of processes (pid, ppid, pgid, session, start
// ticks after boot) booted bootAgo ago; their PIDs are above any kernel's
// pid_max, so no real process is among them.
func fakeProc(t *testing.T, bootAgo time.Duration, procs [][5]int) string {
	t.Helper()
	dir := t.TempDir()
	btime := time.Now().Add(-bootAgo).Unix()
	if err := os.WriteFile(dir+"/stat", []byte("cpu 0 0 0 0\nbtime "+strconv.FormatInt(btime, 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		d := dir + "/" + strconv.Itoa(p[0])
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%d (fake) S %d %d %d 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 %d 1000 10%s\n",
			p[0], p[1], p[2], p[3], p[4], strings.Repeat(" 0", 30))
		if err := os.WriteFile(d+"/stat", []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Session 0 (a tree that never called setsid(), as under CI or a
// container's runtime) is a session like any other for the session rule,
// and a group whose number names a live process other than its recorded
// leader is a later group. Read from a made-up procfs, so that it runs
// the same whatever session the test itself is in.
func TestFamilySessionZero(t *testing.T) {
	const g = 5000001 // the group; its leader has exited
	ticks := func(d time.Duration) int { return int(d / (time.Second / clockTicks)) }
	boot := time.Hour
	created := time.Now().Add(-10 * time.Minute) // the run, 50 min after boot
	after := ticks(55 * time.Minute)             // a start after the run's creation
	procs := [][5]int{
		{5000002, 1, g, 0, after},             // left in the group, environment cleared
		{5000003, 5000002, 5000003, 0, after}, // its child, in a group of its own
		{5000010, 1, 5000010, 0, after},       // a stranger of the same session
	}
	base := Family{RunID: runid.Generate(), PGIDs: []int{g}, NotBefore: created, Session: 0, HasSession: true}
	members := func(f Family) []int {
		t.Helper()
		snap, err := f.snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for pid, e := range snap {
			if e.why != "" {
				out = append(out, pid)
			}
		}
		sort.Ints(out)
		return out
	}

	f := base
	f.Proc = fakeProc(t, boot, procs)
	if got, want := members(f), []int{5000002, 5000003}; !equal(got, want) {
		t.Fatalf("session 0: members %v, want %v", got, want)
	}
	f.HasSession = false
	if got := members(f); len(got) != 0 {
		t.Fatalf("no session known: members %v", got)
	}

	// The group's number now names a live process: the recorded leader,
	// or a later one.
	leaderStart := ticks(51 * time.Minute)
	f = base
	f.Proc = fakeProc(t, boot, append(procs, [5]int{g, 1, g, 0, leaderStart}))
	f.GroupLeaders = map[int]uint64{g: uint64(leaderStart)}
	if got, want := members(f), []int{g, 5000002, 5000003}; !equal(got, want) {
		t.Fatalf("with its leader alive: members %v, want %v", got, want)
	}
	f.Proc = fakeProc(t, boot, append(procs, [5]int{g, 1, g, 0, ticks(58 * time.Minute)}))
	if got := members(f); len(got) != 0 {
		t.Fatalf("a later group of the number: members %v", got)
	}
}
