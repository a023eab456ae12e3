//go:build linux

package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
)

func TestParseStat(t *testing.T) {
	// comm may hold spaces and parentheses; fields count from the last ')'.
	rest := "S 1 4321 4321 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10"
	// Field 31 (pending signals) is 256: SIGKILL.
	st, err := ParseStat([]byte("4321 (a) (b c)) " + rest + " 0 0 0 0 0 0 256 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PID: 4321, Comm: "a) (b c)", State: 'S', PPID: 1, PGID: 4321, Session: 4321, Flags: 4194564, Start: 987654, Pending: 256}
	if st != want {
		t.Fatalf("got %+v\nwant %+v", st, want)
	}
	if !st.Exiting() || st.Dead() {
		t.Fatalf("flags 0x%x: Exiting=%v Dead=%v", st.Flags, st.Exiting(), st.Dead())
	}
	for _, bad := range []string{"", "12 no-parens S 1", "12 (x) S 1 2", "x (y) " + rest} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) accepted", bad)
		}
	}
}

// Dying: a live process is not (even when one of its threads has ended on
// its own); an exited one, or none, is.
func TestDying(t *testing.T) {
	// A thread of ours ends: its goroutine returns while locked to it
	// (not on the main thread, which the runtime keeps). Our own thread
	// is locked to us and a try that lands on the main thread keeps it
	// busy, so that another try gets another thread (run alone, the test
	// used to find only the main thread, 100 times).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hold := make(chan struct{})
	defer close(hold)
	tid := 0
	for range 100 {
		c := make(chan int)
		go func() {
			runtime.LockOSThread()
			if id := unix.Gettid(); id != os.Getpid() {
				c <- id
				return
			}
			c <- 0
			<-hold
			runtime.UnlockOSThread()
		}()
		if tid = <-c; tid != 0 {
			break
		}
	}
	if tid == 0 {
		t.Fatal("no goroutine ran off the main thread")
	}
	gone := "/proc/self/task/" + strconv.Itoa(tid)
	testenv.Eventually(t, 10*time.Second, "our locked thread gone", func() bool {
		_, err := os.Stat(gone)
		return err != nil
	})
	if Dying(os.Getpid()) {
		t.Fatal("Dying(self)")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "/bin/true a zombie", func() bool {
		st, err := ReadStat(cmd.Process.Pid)
		return err == nil && st.Dead()
	})
	if !Dying(cmd.Process.Pid) {
		t.Fatal("Dying(zombie) is false")
	}
	_ = cmd.Wait()
	if !Dying(1 << 30) { // above any pid_max
		t.Fatal("Dying(no such process) is false")
	}
}

// killed: a process sent SIGKILL is, until it is reaped; one that exited
// on its own, or lives, is not.
func TestKilled(t *testing.T) {
	zombie := func(argv ...string) *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	dead := func(cmd *exec.Cmd) {
		testenv.Eventually(t, 10*time.Second, "child a zombie", func() bool {
			st, err := ReadStat(cmd.Process.Pid)
			return err == nil && st.Dead()
		})
	}
	sl := zombie("sleep", "100")
	if killed(sl.Process.Pid) {
		t.Fatal("killed(live sleep)")
	}
	if err := unix.Kill(sl.Process.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	dead(sl)
	if !killed(sl.Process.Pid) {
		t.Fatal("killed(SIGKILLed zombie) is false")
	}
	ex := zombie("sh", "-c", "exit 3")
	dead(ex)
	if killed(ex.Process.Pid) {
		t.Fatal("killed(zombie that exited on its own)")
	}
	if killed(os.Getpid()) {
		t.Fatal("killed(self)")
	}
}

func TestReadStatSelfAndGone(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil || st.PID != os.Getpid() || st.Start == 0 || st.State == 'Z' {
		t.Fatalf("ReadStat(self) = %+v, %v", st, err)
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStat(cmd.Process.Pid); !errors.Is(err, ErrNoProcess) {
		// The PID may have been reused already on a busy host; then it is
		// someone else's and must at least have another start time.
		if err != nil {
			t.Fatalf("ReadStat(reaped) = %v, want ErrNoProcess", err)
		}
	}
}

// startProc starts a process we own and makes sure it is gone, and reaped,
// when the test ends. stdin is a pipe kept open until then, so "read"
// blocks.
func startProc(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = pr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() {
		pw.Close()
		_ = cmd.Process.Kill() // through os/exec's pidfd: never a reused PID
		_ = cmd.Wait()
	})
	return cmd
}

func identityOf(t *testing.T, pid int) Identity {
	t.Helper()
	id, err := IdentityOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitStarted waits until pid has exec'd a program named comm (the kernel
// has no event for exec).
func waitStarted(t *testing.T, pid int, comm string) {
	t.Helper()
	var st Stat
	var err error
	if !testenv.Within(30*time.Second, func() bool {
		st, err = ReadStat(pid)
		return err == nil && st.Comm == comm
	}) {
		t.Fatalf("pid %d never became %s (%+v, %v)", pid, comm, st, err)
	}
}

// waitIgnores waits until pid ignores sig (SigIgn in /proc/PID/status).
func waitIgnores(t *testing.T, pid int, sig unix.Signal) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("pid %d ignores %v", pid, sig), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("pid %d: %v", pid, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				return err == nil && mask&(1<<(uint(sig)-1)) != 0
			}
		}
		return false
	})
}

// startWithPID starts args so that the new process gets PID pid, by setting
// /proc/sys/kernel/ns_last_pid just before the fork (the CRIU technique).
// Other forks on this busy host may take the PID first, so it retries. A
// successor whose start time equals avoidStart is refused too: start times
// count clock ticks (10 ms), and a real PID reuse needs the PID space to
// wrap, which takes far longer than one tick. It returns nil if the PID
// could not be had.
func startWithPID(t *testing.T, pid int, avoidStart uint64, env []string, args ...string) *exec.Cmd {
	t.Helper()
	testenv.RequireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var got *exec.Cmd
	testenv.Within(30*time.Second, func() bool {
		f, err := os.OpenFile("/proc/sys/kernel/ns_last_pid", os.O_WRONLY, 0)
		if err != nil {
			testenv.Missing(t, "cannot set ns_last_pid: %v", err)
		}
		_ = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		_, werr := f.WriteString(strconv.Itoa(pid - 1))
		if werr != nil {
			f.Close()
			testenv.Missing(t, "cannot set ns_last_pid: %v", werr)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), env...)
		err = cmd.Start()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st, err := ReadStat(cmd.Process.Pid); cmd.Process.Pid == pid && err == nil && st.Start != avoidStart {
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			got = cmd
			return true
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return false
	})
	return got
}

func TestPinRefusesReusedPID(t *testing.T) {
	testenv.RequireRoot(t)
	a := exec.Command("sleep", "300")
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	idA := identityOf(t, a.Process.Pid)
	p, err := Pin(idA)
	if err != nil {
		t.Fatalf("Pin(live) = %v", err)
	}
	p.Close()
	_ = a.Process.Kill()
	_ = a.Wait()

	b := startWithPID(t, idA.PID, idA.Start, nil, "sleep", "300")
	if b == nil {
		t.Fatalf("could not get PID %d again to simulate reuse", idA.PID)
	}
	waitStarted(t, b.Process.Pid, "sleep")
	if _, err := Pin(idA); !errors.Is(err, ErrReused) {
		t.Fatalf("Pin(identity of exited A) with PID reused by B = %v, want ErrReused", err)
	}
	if err := unix.Kill(b.Process.Pid, 0); err != nil {
		t.Fatalf("B was hurt: %v", err)
	}
}

func TestKillMarkedSparesReusedPID(t *testing.T) {
	testenv.RequireRoot(t)
	id := runid.Generate()
	a := exec.Command("sleep", "300")
	a.Env = append(os.Environ(), runid.EnvVar+"="+id)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Process.Kill(); _ = a.Wait() })
	waitStarted(t, a.Process.Pid, "sleep")
	ms, err := Scan(context.Background(), ScanOptions{RunIDs: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll(ms)
	if len(ms) != 1 || ms[0].PID != a.Process.Pid || ms[0].Source != SourceEnviron {
		t.Fatalf("scan = %+v, want A (pid %d) marked via environ", ms, a.Process.Pid)
	}
	// A exits between scan and kill; B, marked with the same run, takes
	// its PID. Only a pidfd (or a start-time check) tells them apart.
	_ = a.Process.Kill()
	_ = a.Wait()
	// Same start tick allowed: the pidfd taken at scan time must tell A
	// and B apart even then.
	b := startWithPID(t, ms[0].PID, 0, []string{runid.EnvVar + "=" + id}, "sleep", "300")
	if b == nil {
		t.Fatalf("could not get PID %d again to simulate reuse", ms[0].PID)
	}
	waitStarted(t, b.Process.Pid, "sleep")
	res := KillMarked(context.Background(), ms, 0)
	if len(res) != 1 || res[0].Outcome != OutcomeGone {
		t.Fatalf("KillMarked(stale) = %+v, want gone", res)
	}
	if err := unix.Kill(b.Process.Pid, 0); err != nil {
		t.Fatalf("B (reused PID %d) was killed: %v", b.Process.Pid, err)
	}
}

func TestScanFindsEveryMarkerForm(t *testing.T) {
	testenv.RequireRoot(t)
	id := runid.Generate()
	procs := map[int]string{}
	for src, c := range map[string]*exec.Cmd{
		"argv-long":  startProc(t, nil, "sh", "-c", "read x", "sh", runid.Flag, id),
		"argv-short": startProc(t, nil, "sh", "-c", "read x", "sh", runid.ShortFlag+"="+id),
		"environ":    startProc(t, []string{runid.EnvVar + "=" + id}, "sh", "-c", "read x"),
	} {
		procs[c.Process.Pid] = src
	}
	// An invalid marker and another run's marker must not match.
	startProc(t, nil, "sh", "-c", "read x", "sh", runid.Flag, "NOT-AN-ID")
	other := startProc(t, []string{runid.EnvVar + "=" + runid.Generate()}, "sh", "-c", "read x")
	for pid := range procs {
		waitStarted(t, pid, "sh")
	}
	waitStarted(t, other.Process.Pid, "sh")

	ms, err := Scan(context.Background(), ScanOptions{RunIDs: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll(ms)
	got := map[int]string{}
	for _, m := range ms {
		if m.Pinned() == nil || m.Pinned().FD() < 0 {
			t.Errorf("pid %d not pinned by a pidfd", m.PID)
		}
		got[m.PID] = m.Source
	}
	if len(got) != len(procs) {
		t.Fatalf("scan found %v, want %v", got, procs)
	}
	for pid, src := range procs {
		want := SourceArgv
		if src == "environ" {
			want = SourceEnviron
		}
		if got[pid] != want {
			t.Errorf("pid %d (%s): source %q, want %q", pid, src, got[pid], want)
		}
	}
	for _, m := range ms {
		if m.PID == os.Getpid() {
			t.Errorf("scan returned ourselves")
		}
	}
}

func TestKillMarkedEscalates(t *testing.T) {
	testenv.RequireRoot(t)
	id := runid.Generate()
	polite := startProc(t, []string{runid.EnvVar + "=" + id}, "sleep", "300")
	stubborn := startProc(t, nil, "sh", "-c", `trap "" TERM; read x`, "sh", runid.Flag, id)
	waitStarted(t, polite.Process.Pid, "sleep")
	waitStarted(t, stubborn.Process.Pid, "sh")
	// Being "sh" is not enough: until its trap has run, SIGTERM kills it.
	waitIgnores(t, stubborn.Process.Pid, unix.SIGTERM)
	ms, err := Scan(context.Background(), ScanOptions{RunIDs: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll(ms)
	start := time.Now()
	res := KillMarked(context.Background(), ms, 300*time.Millisecond)
	took := time.Since(start)
	outcome := map[int]Outcome{}
	for _, r := range res {
		outcome[r.PID] = r.Outcome
	}
	if outcome[polite.Process.Pid] != OutcomeTerminated || outcome[stubborn.Process.Pid] != OutcomeKilled {
		t.Fatalf("outcomes %v: want polite (%d) terminated, stubborn (%d) killed", outcome, polite.Process.Pid, stubborn.Process.Pid)
	}
	if took < 300*time.Millisecond {
		t.Fatalf("SIGKILL came after %v, before the 300ms grace", took)
	}
	for _, m := range ms {
		if !m.Pinned().Exited() {
			t.Errorf("pid %d still alive", m.PID)
		}
	}
}

func TestSweepStopsForkStorm(t *testing.T) {
	testenv.RequireRoot(t)
	id := runid.Generate()
	// 200 marked children forked in a loop, half of them in new sessions;
	// the sweep starts while the loop is still forking.
	storm := `i=0; while [ $i -lt 200 ]; do if [ $((i%2)) = 0 ]; then sleep 300 & else setsid sleep 300 & fi; i=$((i+1)); done; read x`
	startProc(t, []string{runid.EnvVar + "=" + id}, "sh", "-c", storm)
	t.Cleanup(func() { killMarkedForTest(t, id) })
	// The sweep is to start while the storm is under way: once 20 are up
	// (or after the bound, as the storm may have been fast).
	testenv.Within(30*time.Second, func() bool {
		ms, _ := ListMarked(context.Background())
		n := 0
		for _, m := range ms {
			if m.RunID == id {
				n++
			}
		}
		return n >= 20
	})
	t0 := time.Now()
	res, err := Sweep(context.Background(), func(m *Marked) bool { return m.RunID == id }, 200*time.Millisecond)
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	left := remainingMarked(t, id)
	if len(left) > 0 {
		t.Fatalf("after sweep (%d results) %d marked processes remain: %v", len(res), len(left), left)
	}
	t.Logf("sweep ended %d processes in %v (grace 200ms)", len(res), took)
}

func remainingMarked(t *testing.T, id string) []string {
	t.Helper()
	ms, err := ListMarked(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.RunID == id {
			out = append(out, fmt.Sprintf("%d:%s", m.PID, m.Cmdline()))
		}
	}
	return out
}

// killMarkedForTest kills whatever is left of the test's own marked
// processes (all descendants of processes this test started).
func killMarkedForTest(t *testing.T, id string) {
	ms, err := Scan(context.Background(), ScanOptions{RunIDs: []string{id}})
	if err != nil {
		return
	}
	for i := range ms {
		_ = ms[i].Signal(unix.SIGCONT)
	}
	KillMarked(context.Background(), ms, 0)
	CloseAll(ms)
	if left := remainingMarked(t, id); len(left) > 0 {
		t.Errorf("leaked marked processes: %s", strings.Join(left, ", "))
	}
}

// A poll cut short by a signal (here the runtime's own preemption signal,
// sent to the polling thread every millisecond) is not an exit.
func TestPidfdExitedThroughSignals(t *testing.T) {
	cmd := exec.Command("sleep", "100")
	fd := startWithPidfd(t, cmd)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
			}
		}
	}()
	if PidfdExited(fd, 50*time.Millisecond) {
		t.Fatal("PidfdExited(live sleep) is true")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if !PidfdExited(fd, 10*time.Second) {
		t.Fatal("PidfdExited(SIGKILLed sleep) is false")
	}
}

// threadsDying, on the reads an exec from a thread other than the leader
// can give: the leader already exited, the exec'ing thread's ID gone (it
// took over the leader's PID). The process lives on: the leader's PID names
// a live thread when read again. A death reads the same, but for that.
func TestThreadsDyingThroughExec(t *testing.T) {
	zombie := Stat{State: 'Z'}
	running := Stat{State: 'R'}
	for _, tc := range []struct {
		name        string
		leaderAfter Stat // the leader's second read
		leaderGone  bool // ... or it is gone by then
		want        bool
	}{
		{"exec", running, false, false},
		{"death", zombie, false, true},
		{"death, reaped meanwhile", Stat{}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			stat := func(tid string) (Stat, error) {
				switch tid {
				case "100":
					reads++
					if reads == 1 {
						return zombie, nil
					}
					if tc.leaderGone {
						return Stat{}, ErrNoProcess
					}
					return tc.leaderAfter, nil
				case "101": // killed by the exec (or the death), not yet gone
					return Stat{State: 'S', Pending: 1 << (unix.SIGKILL - 1)}, nil
				default: // the exec'ing thread, or one that exited
					return Stat{}, ErrNoProcess
				}
			}
			if got := threadsDying(100, listOf("100", "101", "102"), stat); got != tc.want {
				t.Fatalf("threadsDying = %v, want %v", got, tc.want)
			}
		})
	}
	// A thread read as alive decides at once.
	if threadsDying(100, listOf("100", "101"), func(tid string) (Stat, error) { return Stat{State: 'S'}, nil }) {
		t.Fatal("a live thread read as dying")
	}
	// A thread made after the first list (it goes on to exec, killing the
	// others) is read too: the process is not dying.
	lists := 0
	grows := func() ([]string, error) {
		lists++
		if lists == 1 {
			return []string{"100", "101"}, nil
		}
		return []string{"100", "101", "103"}, nil
	}
	killedByExec := Stat{State: 'S', Pending: 1 << (unix.SIGKILL - 1)}
	if threadsDying(100, grows, func(tid string) (Stat, error) {
		if tid == "103" {
			return Stat{State: 'R'}, nil
		}
		return killedByExec, nil
	}) {
		t.Fatal("a thread made after the first list went unread")
	}
}

func listOf(tids ...string) func() ([]string, error) {
	return func() ([]string, error) { return tids, nil }
}

// The same on the kernel: a chain of execs, each from a thread other than
// the leader (Python's threads), while Dying is asked again and again. It
// said yes 32-39 times in 100 execs before it read the leader again.
func TestDyingNotDuringExec(t *testing.T) {
	python := testenv.RequireTool(t, "python3")
	const chain = `
import os, sys, threading
n = int(sys.argv[1])
if n == 0:
    open(sys.argv[2], "w").close()
    threading.Event().wait()
threading.Thread(target=threading.Event().wait, daemon=True).start()
t = threading.Thread(target=lambda: os.execv(sys.executable, [sys.executable, sys.argv[0], str(n - 1), sys.argv[2]]))
t.start()
t.join()
`
	dir := t.TempDir()
	script, done := dir+"/chain.py", dir+"/done"
	if err := os.WriteFile(script, []byte(chain), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, script, "40", done)
	fd := startWithPidfd(t, cmd)
	yes, asked := 0, 0
	for {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if PidfdExited(fd, 0) {
			t.Fatal("the exec chain died")
		}
		asked++
		if Dying(cmd.Process.Pid) {
			yes++
		}
	}
	if yes > 0 {
		t.Fatalf("Dying said yes %d times of %d during 40 execs of a live process", yes, asked)
	}
}

// startWithPidfd starts cmd and returns a pidfd of it; both end with the
// test.
func startWithPidfd(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
