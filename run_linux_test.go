//go:build linux

package snakepit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// newTestRun creates a run on the real cgroupfs and tears it down (and
// checks it is gone) when the test ends, even on failure.
func newTestRun(t testing.TB, opts Options) *Run {
	t.Helper()
	testenv.RequireCgroup2(t)
	ctx := context.Background()
	r, err := Create(ctx, opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.Teardown(cctx, 0); err != nil {
			t.Errorf("cleanup teardown: %v", err)
		}
		if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run cgroup %s still exists after teardown (stat: %v)", r.CgroupPath(), err)
		}
	})
	return r
}

// pidfdsOf opens a pidfd on every process now in the run, so liveness can be
// checked later without trusting PIDs (which may be reused).
func pidfdsOf(t testing.TB, g *cgroup.Group) map[int]int {
	t.Helper()
	pids, err := g.ProcsRecursive()
	if err != nil {
		t.Fatalf("procs: %v", err)
	}
	fds := map[int]int{}
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // exited already
		}
		fds[pid] = fd
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds
}

// alive returns the PIDs whose pidfd does not yet report exit.
func alive(fds map[int]int) []int {
	var out []int
	for pid, fd := range fds {
		if !reaper.PidfdExited(fd, 0) {
			out = append(out, pid)
		}
	}
	return out
}

// waitProcs waits (there is no event for "n processes") until the run
// holds at least n processes.
func waitProcs(t testing.TB, g *cgroup.Group, n int) {
	t.Helper()
	var pids []int
	testenv.Eventually(t, 120*time.Second, fmt.Sprintf("run holds >= %d processes", n), func() bool {
		var err error
		if pids, err = g.ProcsRecursive(); err != nil {
			t.Fatalf("procs: %v", err)
		}
		return len(pids) >= n
	})
}

func TestCreateRejectsInvalidIDsBeforeFilesystem(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "parent")
	for _, id := range []string{"../etc", "ABCDEFG", "abc123", "abc12345", "", "äbc123", "abc/123", "abc\x00123"} {
		if id == "" {
			continue // empty means "generate"; inventory.Lookup covers it below
		}
		_, err := Create(context.Background(), Options{ID: id, CgroupParent: parent})
		if !errors.Is(err, runid.ErrInvalid) {
			t.Errorf("Create(%q) = %v, want ErrInvalid", id, err)
		}
	}
	// The spec's other checks hold for the library's door too.
	for _, c := range []struct {
		opts Options
		want error
	}{
		{Options{Grace: -time.Second}, spec.ErrBadDuration},
		{Options{StopSignal: 999}, spec.ErrBadSignal},
	} {
		c.opts.CgroupParent = parent
		if _, err := Create(context.Background(), c.opts); !errors.Is(err, c.want) {
			t.Errorf("Create(%+v) = %v, want %v", c.opts, err, c.want)
		}
	}
	if _, err := inventory.Lookup("", parent); !errors.Is(err, runid.ErrInvalid) {
		t.Errorf("Lookup(\"\") = %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(parent); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("invalid IDs touched the filesystem: %s exists (%v)", parent, err)
	}
}

func TestCreateIDInUse(t *testing.T) {
	r := newTestRun(t, Options{})
	_, err := Create(context.Background(), Options{ID: r.ID(), CgroupParent: filepath.Dir(r.CgroupPath())})
	if !errors.Is(err, cgroup.ErrExists) {
		t.Fatalf("second Create with id %s: %v, want ErrExists", r.ID(), err)
	}
	// Across mechanisms too: a POSIX run's teardown signals every
	// process marked with its ID, the other run's included. (No guardian
	// for it: its service would live in the test's temporary directory.)
	p := newPOSIXRun(t, Options{Mode: ModePOSIX, NoGuardian: true})
	mustRefuse := func(what string, opts Options) {
		dup, err := Create(context.Background(), opts)
		if dup != nil {
			_, _ = dup.Teardown(context.Background(), 0)
		}
		if !errors.Is(err, cgroup.ErrExists) {
			t.Errorf("%s: %v, want ErrExists", what, err)
		}
	}
	mustRefuse("POSIX Create with a cgroup run's id", Options{ID: r.ID(), Mode: ModePOSIX, NoGuardian: true})
	mustRefuse("cgroup Create with a POSIX run's id", Options{ID: p.ID()})
}

// TestTeardownHostileTree: forked children, double-forked setsid'd daemons
// and a SIGTERM-ignoring process are all gone after teardown, and the
// cgroup is removed.
func TestTeardownHostileTree(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	script := `
for i in 1 2 3 4 5; do sleep 300 & done
setsid sh -c 'setsid sh -c "sleep 300 & sleep 300" & sleep 300' &
sh -c 'trap "" TERM; while :; do sleep 1; done' &
wait`
	w, err := r.Start(ctx, Command{Args: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	// sh + 5 sleeps + (setsid sh, its inner setsid sh, 2 sleeps, sleep) + trap sh + its sleep
	waitProcs(t, r.Cgroup(), 13)
	fds := pidfdsOf(t, r.Cgroup())
	if len(fds) < 13 {
		t.Fatalf("only %d pidfds", len(fds))
	}
	rep, err := r.Teardown(ctx, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if !rep.Killed {
		t.Errorf("SIGTERM-ignoring process should have forced cgroup.kill: %+v", rep)
	}
	if left := alive(fds); len(left) > 0 {
		t.Fatalf("processes alive after teardown: %v", left)
	}
	if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cgroup not removed: %v", err)
	}
	st, err := w.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Signal != unix.SIGTERM {
		t.Errorf("main worker: %v, want killed by SIGTERM", st)
	}
}

// TestTeardownCancelledCtx: a ctx that has ended cuts the grace short but
// not the kill: every process dies and the cgroup is removed (it once
// stayed, and a second Teardown then said nil).
func TestTeardownCancelledCtx(t *testing.T) {
	r := newTestRun(t, Options{})
	if _, err := r.Start(context.Background(), Command{Args: []string{"sh", "-c", `trap "" TERM; setsid sleep 301 & sleep 300 & wait`}}); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, r.Cgroup(), 3)
	fds := pidfdsOf(t, r.Cgroup())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := r.Teardown(ctx, time.Minute)
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if !rep.Killed {
		t.Errorf("report %+v: want the rest killed", rep)
	}
	if left := alive(fds); len(left) > 0 {
		t.Fatalf("processes alive after teardown: %v", left)
	}
	if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cgroup not removed: %v", err)
	}
}

// TestGracefulTeardown: workers that honour SIGTERM end within the grace
// period and cgroup.kill is not needed.
func TestGracefulTeardown(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	if _, err := r.Start(ctx, Command{Args: []string{"sh", "-c", "sleep 300 & setsid sleep 300 & wait"}}); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, r.Cgroup(), 3)
	rep, err := r.Teardown(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Killed || rep.Terminated < 3 {
		t.Fatalf("report %+v: want >= 3 terminated, no kill", rep)
	}
}

// TestChildrenStartInsideRun: 1000 short-lived children print their own
// /proc/self/cgroup and exit at once; every one must report the run cgroup,
// which only holds when placement happens before the child runs.
func TestChildrenStartInsideRun(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	m, _ := cgroup.FindMount()
	want := "0::" + strings.TrimPrefix(r.CgroupPath(), m.Path)
	n := 1000
	if testing.Short() {
		n = 100
	}
	for i := 0; i < n; i++ {
		var out bytes.Buffer
		w, err := r.Start(ctx, Command{Args: []string{"/bin/cat", "/proc/self/cgroup"}, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if w.Placement != "clone3" {
			t.Fatalf("child %d placed by %q, want clone3 on this kernel", i, w.Placement)
		}
		found := false
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			if sc.Text() == want {
				found = true
			}
		}
		if !found {
			t.Fatalf("child %d reported cgroup:\n%s\nwant line %q", i, out.String(), want)
		}
	}
}

// TestPreExecPlacement exercises the fallback used when clone3 refuses
// CLONE_INTO_CGROUP: the child must still be inside before exec.
func TestPreExecPlacement(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	m, _ := cgroup.FindMount()
	want := "0::" + strings.TrimPrefix(r.CgroupPath(), m.Path)
	var out bytes.Buffer
	w, err := r.startPreExecForTest(ctx, Command{Args: []string{"/bin/cat", "/proc/self/cgroup"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), want+"\n") {
		t.Fatalf("pre-exec child reported:\n%s\nwant %q", out.String(), want)
	}
}

func TestWorkerStatusAndSignal(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	w, err := r.Start(ctx, Command{Args: []string{"sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := w.Wait(ctx); st.ShellCode() != 3 {
		t.Fatalf("status %v, want exit 3", st)
	}
	w, err = r.Start(ctx, Command{Args: []string{"sleep", "300"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.Wait(ctx); st.ShellCode() != 128+9 {
		t.Fatalf("status %v, want 137", st)
	}
	if err := w.Signal(unix.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal after exit: %v, want ErrProcessDone", err)
	}
}

// AfterExit runs its hook once the worker has exited (Wait returns at
// once by then), and at once for a worker that already has.
func TestWorkerAfterExit(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	w, err := r.Start(ctx, Command{Args: []string{"sleep", "300"}})
	if err != nil {
		t.Fatal(err)
	}
	called := make(chan bool, 1)
	w.AfterExit(func() {
		select {
		case <-w.Done():
			called <- true
		default:
			called <- false
		}
	})
	select {
	case <-called:
		t.Fatal("AfterExit ran before the worker exited")
	case <-time.After(50 * time.Millisecond):
	}
	if err := w.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case done := <-called:
		if !done {
			t.Fatal("AfterExit ran before Done was closed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("AfterExit did not run")
	}
	ran := false
	w.AfterExit(func() { ran = true })
	if !ran {
		t.Fatal("AfterExit of an exited worker did not run at once")
	}
}

func TestStartAfterTeardown(t *testing.T) {
	r := newTestRun(t, Options{})
	if _, err := r.Teardown(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(context.Background(), Command{Args: []string{"true"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after teardown: %v", err)
	}
	if _, err := r.Start(context.Background(), Command{}); !errors.Is(err, ErrNoCommand) {
		t.Fatalf("Start without program: %v", err)
	}
}

func TestTeardownVanishedCgroup(t *testing.T) {
	r := newTestRun(t, Options{})
	if err := unix.Rmdir(r.CgroupPath()); err != nil {
		t.Fatal(err)
	}
	rep, err := r.Teardown(context.Background(), time.Second)
	if err != nil || !rep.Vanished {
		t.Fatalf("teardown of removed cgroup: %+v, %v", rep, err)
	}
}

func TestRunEnvCarriesID(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	var out bytes.Buffer
	w, err := r.Start(ctx, Command{Args: []string{"sh", "-c", "echo $SNAKEPIT_RUN_ID"}, Env: []string{"SNAKEPIT_RUN_ID=zzzzzzz", "PATH=/usr/bin:/bin"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	w.Wait(ctx)
	if got := strings.TrimSpace(out.String()); got != r.ID() {
		t.Fatalf("SNAKEPIT_RUN_ID=%q, want %q", got, r.ID())
	}
}

func ExampleCreate() {
	ctx := context.Background()
	r, err := Create(ctx, Options{})
	if err != nil {
		fmt.Println("no cgroup2 here:", err)
		return
	}
	var out bytes.Buffer
	w, _ := r.Start(ctx, Command{Args: []string{"sh", "-c", "setsid sleep 300 & echo started"}, Stdout: &out})
	w.Wait(ctx)
	rep, _ := r.Teardown(ctx, time.Second)
	fmt.Print(out.String())
	fmt.Println("terminated leftovers:", rep.Terminated)
	// Needs root and cgroup2, so it is compiled but not run by go test;
	// TestTeardownHostileTree covers the same path.
}

// TestStartRacingTeardown: Starts that race a Teardown either fail with
// ErrClosed or give a worker that the teardown kills; none survives it and
// the cgroup is removed.
func TestStartRacingTeardown(t *testing.T) {
	ctx := context.Background()
	for round := 0; round < 10; round++ {
		r := newTestRun(t, Options{})
		var wg sync.WaitGroup
		workers := make(chan *Worker, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := r.Start(ctx, Command{Args: []string{"sleep", "300"}})
				if err == nil {
					workers <- w
				} else if !errors.Is(err, ErrClosed) {
					t.Errorf("round %d: Start: %v", round, err)
				}
			}()
		}
		if _, err := r.Teardown(ctx, 0); err != nil {
			t.Fatalf("round %d: Teardown: %v", round, err)
		}
		wg.Wait()
		close(workers)
		for w := range workers {
			select {
			case <-w.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: worker %d outlived the teardown", round, w.WID)
			}
		}
		if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: cgroup left: %v", round, err)
		}
	}
}

// A start stuck before exec (its child cloned into a frozen run cgroup:
// what a stop loop of the worker's user can cause) does not hold the
// teardown: the kill ends the child, and with it the start.
func TestTeardownEndsStuckStart(t *testing.T) {
	testenv.RequireRoot(t)
	r := newTestRun(t, Options{})
	freeze := filepath.Join(r.CgroupPath(), "cgroup.freeze")
	if _, err := os.Stat(freeze); err != nil {
		testenv.Missing(t, "no cgroup.freeze: %v", err)
	}
	if err := os.WriteFile(freeze, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type result struct {
		w   *Worker
		err error
	}
	started := make(chan result, 1)
	go func() {
		w, err := r.Start(ctx, Command{Args: []string{"/bin/true"}})
		started <- result{w, err}
	}()
	testenv.Eventually(t, 30*time.Second, "the start's child in the frozen run", func() bool {
		pids, _ := r.Cgroup().Procs()
		return len(pids) > 0
	})
	torn := make(chan error, 1)
	go func() {
		_, err := r.Teardown(ctx, 0)
		torn <- err
	}()
	select {
	case err := <-torn:
		if err != nil {
			t.Fatalf("Teardown: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = os.WriteFile(freeze, []byte("0"), 0) // let the start, and the teardown, end
		t.Fatal("Teardown held by the start stuck before exec")
	}
	// Killed before its exec, the child closes the exec pipe as an exec
	// would: the start fails, or gives a worker already dead.
	res := <-started
	switch {
	case res.err != nil && !errors.Is(res.err, ErrClosed):
		t.Fatalf("the stuck Start: %v, want ErrClosed or a dead worker", res.err)
	case res.w != nil:
		select {
		case <-res.w.Done():
		default:
			t.Fatal("the stuck start's worker is alive after Teardown")
		}
	}
}

// A reaped worker's pidfd is closed at once, and the run forgets it: a run
// whose workers come and go holds no descriptor per exited worker.
func TestReapedWorkerReleasesPidfd(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// One worker first: the run's lazily opened descriptors are in the
	// baseline.
	if w, err := r.Start(ctx, Command{Args: []string{"true"}}); err != nil {
		t.Fatal(err)
	} else if _, err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	before := fds()
	for i := 0; i < 50; i++ {
		w, err := r.Start(ctx, Command{Args: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := w.Wait(ctx); err != nil || st.Code != 0 {
			t.Fatalf("worker %d: %v, %v", i, st, err)
		}
		if fd := w.PidFD(); fd != -1 {
			t.Fatalf("worker %d: pidfd %d still open after it was reaped", i, fd)
		}
	}
	testenv.Eventually(t, 10*time.Second, "the run forgets its reaped workers", func() bool { return len(r.Workers()) == 0 })
	if after := fds(); after > before+2 {
		t.Fatalf("open fds %d after 50 reaped workers, %d before", after, before)
	}
}

// A running worker costs its supervisor no OS thread: the wait for its
// exit sits in the runtime's poller, not in a blocking waitid (which held
// one thread per worker: 50 sleepers, 55 threads).
func TestRunningWorkersHoldNoThread(t *testing.T) {
	r := newTestRun(t, Options{})
	ctx := context.Background()
	const n = 30
	threads := func() int {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Threads:"); ok {
				var k int
				if _, err := fmt.Sscan(v, &k); err != nil {
					t.Fatal(err)
				}
				return k
			}
		}
		t.Fatal("no Threads: line in /proc/self/status")
		return 0
	}
	before := threads()
	for i := 0; i < n; i++ {
		if _, err := r.Start(ctx, Command{Args: []string{"sleep", "1000"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Every worker's wait has reached where it waits: parked in the
	// poller ("IO wait") or blocked in a system call ("syscall").
	waiting := func() (parked, blocked int) {
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, "snakepit.(*Worker).wait(") {
				continue
			}
			switch {
			case strings.Contains(g, "[IO wait"):
				parked++
			case strings.Contains(g, "[syscall"):
				blocked++
			}
		}
		return parked, blocked
	}
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d worker waits in place", n), func() bool {
		p, b := waiting()
		return p+b >= n // a wait left by another test counts too
	})
	if p, b := waiting(); b > 0 {
		t.Errorf("%d of %d worker waits block a thread in a system call (%d in the poller)", b, n, p)
	}
	if after := threads(); after > before+n/3 {
		t.Errorf("%d threads with %d running workers, %d before", after, n, before)
	}
}

// A privileged worker that moves itself out of the run cgroup does not
// outlive the teardown: its pidfd still names it, it is SIGKILLed and
// reported as escaped.
func TestTeardownKillsEscapedWorker(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	out := filepath.Join(parent, "elsewhere")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if g, err := cgroup.Open(out); err == nil {
			_, _ = g.Kill(context.Background())
			_ = g.Remove(context.Background())
		}
	})
	r, err := Create(context.Background(), Options{CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	w, err := r.Start(context.Background(), Command{Args: []string{"sh", "-c", "echo $$ > " + out + "/cgroup.procs && exec sleep 300"}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := cgroup.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the worker moved itself out and exec'd sleep", func() bool {
		pids, _ := g.Procs()
		st, err := reaper.ReadStat(w.PID())
		return len(pids) == 1 && pids[0] == w.PID() && err == nil && st.Comm == "sleep"
	})
	rep, err := r.Teardown(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Escaped != 1 {
		t.Fatalf("report %+v, want Escaped 1", rep)
	}
	st, err := w.Wait(context.Background())
	if err != nil || st.Signal != unix.SIGKILL {
		t.Fatalf("escaped worker: %v, %v; want killed by SIGKILL", st, err)
	}
}

// A Stdin that never ends (an io.Pipe nobody closes) holds neither the
// worker's Wait nor the run's Teardown once the worker is dead: os/exec's
// own copy was waited for, for ever.
func TestStdinReaderThatNeverEnds(t *testing.T) {
	r := newTestRun(t, Options{})
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	w, err := r.Start(context.Background(), Command{Args: []string{"sh", "-c", "read line; echo \"got $line\"; exec sleep 300"}, Stdin: pr, Stdout: outW})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	// The worker has read its stdin once it says so.
	_ = outR.SetReadDeadline(time.Now().Add(20 * time.Second))
	if line, err := bufio.NewReader(outR).ReadString('\n'); err != nil || line != "got hello\n" {
		t.Fatalf("worker said %q, %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.Teardown(ctx, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
	case <-ctx.Done():
		t.Fatal("the worker's Wait never ended")
	}
	if ctx.Err() != nil {
		t.Fatal("Teardown ran to its deadline")
	}
}
