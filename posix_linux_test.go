//go:build linux

package snakepit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/posix"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// POSIX-mode runs need neither root nor cgroup2.

// newPOSIXRun makes a POSIX run with its records in a private directory and
// tears it down at the end.
func newPOSIXRun(t *testing.T, opts Options) *Run {
	t.Helper()
	privateRecords(t)
	if opts.Mode == ModeAuto && opts.CgroupParent == "" {
		opts.Mode = ModePOSIX
	}
	r, err := Create(context.Background(), opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.Teardown(ctx, 0); err != nil {
			t.Errorf("cleanup teardown: %v", err)
		}
	})
	return r
}

// startLines starts sh -c script in r and returns the worker and the PIDs
// the script prints (one per line, n of them), pinned.
func startLines(t *testing.T, r *Run, n int, script string) (*Worker, []*reaper.Pinned) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	w, err := r.Start(context.Background(), Command{Args: []string{"/bin/sh", "-c", script}, Stdout: pw})
	pw.Close()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	var pins []*reaper.Pinned
	t.Cleanup(func() {
		for _, p := range pins {
			_ = p.Signal(unix.SIGKILL)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		reaper.WaitExited(ctx, pins)
		for _, p := range pins {
			if p.FD() >= 0 {
				var info unix.Siginfo
				_ = unix.Waitid(unix.P_PIDFD, p.FD(), &info, unix.WEXITED|unix.WNOHANG, nil)
			}
			p.Close()
		}
	})
	sc := bufio.NewScanner(pr)
	for len(pins) < n && sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("line %q", sc.Text())
		}
		id, err := reaper.IdentityOf(pid)
		if err != nil {
			t.Fatalf("pid %d: %v", pid, err)
		}
		p, err := reaper.Pin(id)
		if err != nil {
			t.Fatal(err)
		}
		pins = append(pins, p)
	}
	if len(pins) != n {
		t.Fatalf("got %d PIDs, want %d", len(pins), n)
	}
	return w, pins
}

func survivors(ps []*reaper.Pinned) []int {
	var out []int
	for _, p := range ps {
		if !p.Exited() {
			out = append(out, p.PID)
		}
	}
	return out
}

func TestPOSIXRunLifecycle(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	if r.Mechanism() != record.MechanismPOSIX || r.CgroupPath() != "" || r.Cgroup() != nil || r.Fallback() != nil {
		t.Fatalf("mechanism %q, cgroup %q, fallback %v", r.Mechanism(), r.CgroupPath(), r.Fallback())
	}
	rec, err := record.Read(r.ID())
	if err != nil || rec.Mechanism != record.MechanismPOSIX || rec.Cgroup != "" {
		t.Fatalf("record %+v, %v", rec, err)
	}
	// A double-forked setsid daemon (keeps the marker) and a plain child.
	// The worker outlives its children (exec sleep) so that its own end is
	// the SIGTERM however the teardown orders its signals.
	w, ps := startLines(t, r, 3, `echo $$; sleep 1000 & echo $!; setsid sh -c 'sleep 1000 & echo $!; wait' & wait; exec sleep 1000`)
	if rec, _ := record.Read(r.ID()); rec == nil || rec.PGID != w.PID() {
		t.Fatalf("record should name the worker's process group %d: %+v", w.PID(), rec)
	}
	rep, err := r.Teardown(context.Background(), 2*time.Second)
	if err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := survivors(ps); len(left) > 0 {
		t.Fatalf("survivors after teardown: %v (report %+v)", left, rep)
	}
	if rep.Terminated < 3 || rep.Killed {
		t.Errorf("report %+v: want >= 3 SIGTERMed, none needing SIGKILL", rep)
	}
	st, err := w.Wait(context.Background())
	if err != nil || st.Signal != syscall.SIGTERM {
		t.Errorf("worker ended %v, %v; want killed by SIGTERM", st, err)
	}
	if _, err := record.Read(r.ID()); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("record left after teardown: %v", err)
	}
}

// TestPOSIXTeardownCancelledCtx: a ctx that has ended cuts the grace short
// but not the kill: it once sent nothing but SIGTERM, left the record, and
// a second Teardown then said nil.
func TestPOSIXTeardownCancelledCtx(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	_, ps := startLines(t, r, 3, `trap "" TERM; echo $$; sleep 1000 & echo $!; setsid sh -c 'trap "" TERM; sleep 1000 & echo $!; wait' & wait`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := r.Teardown(ctx, time.Minute)
	if err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := survivors(ps); len(left) > 0 {
		t.Fatalf("survivors after teardown: %v (report %+v)", left, rep)
	}
	if _, err := record.Read(r.ID()); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("record left after teardown: %v", err)
	}
}

// TestPOSIXWithoutReaperLeavesOrphansToInit: without a Reaper nothing here
// would reap the run's orphans, so Create must not make this process their
// subreaper (their zombies once piled up for as long as it lived). Run in a
// fresh process: being a subreaper is for good, and other tests make it so.
func TestPOSIXWithoutReaperLeavesOrphansToInit(t *testing.T) {
	cmd := testenv.HelperProcess("TestHelperPOSIXNoReaper", helperNoReaperEnv+"=1", record.DirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "orphan looked at") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

const helperNoReaperEnv = "SNAKEPIT_TEST_POSIX_NO_REAPER"

func TestHelperPOSIXNoReaper(t *testing.T) {
	if os.Getenv(helperNoReaperEnv) == "" {
		t.Skip("run by TestPOSIXWithoutReaperLeavesOrphansToInit")
	}
	r, err := Create(context.Background(), Options{Mode: ModePOSIX, NoGuardian: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := r.Teardown(context.Background(), 0); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	}()
	var sub int
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&sub)), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if sub != 0 {
		t.Error("Create made this process a subreaper, with no Reaper to reap")
	}
	// The inner sh leaves a sleep behind and exits: once its pidfd says so,
	// the sleep has been re-parented (the kernel does that first). It
	// exits once both are pinned (go, a file): exited and reaped before,
	// its PID named no process.
	goFile := filepath.Join(t.TempDir(), "go")
	_, ps := startLines(t, r, 2, `sh -c 'echo $$; sleep 1000 & echo $!; until [ -e `+goFile+` ]; do sleep 0.01; done'`)
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reaper.WaitExited(ctx, ps[:1])
	if !ps[0].Exited() {
		t.Fatal("the inner sh did not exit")
	}
	if st, err := reaper.ReadStat(ps[1].PID); err != nil || st.PPID == os.Getpid() {
		t.Errorf("the orphan's parent is %d (we are %d), %v: nothing here would reap it", st.PPID, os.Getpid(), err)
	}
	fmt.Println("orphan looked at")
}

// orphanScript double-forks a process that leaves the session and scrubs
// its environment, then prints its PID (only once scrubbed) and becomes a
// sleep without a marker; the worker exits, so the process is re-parented
// to us (the subreaper).
const orphanScript = `setsid env -i /bin/sh -c 'echo $$; exec /bin/sleep 1000' &`

// With AdoptOrphans (snakepit run), an orphan that carries nothing of the
// run is still found: it is a child of the subreaper.
func TestPOSIXAdoptsOrphans(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX, AdoptOrphans: true})
	w, ps := startLines(t, r, 1, orphanScript)
	if _, err := w.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Teardown(context.Background(), time.Second); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := survivors(ps); len(left) > 0 {
		t.Fatalf("orphan %v survived", left)
	}
}

// Without AdoptOrphans the same orphan escapes: the documented limit of
// POSIX mode (README). The test asserts it, then kills it by pidfd.
func TestPOSIXScrubbedOrphanEscapesWithoutAdoption(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	w, ps := startLines(t, r, 1, orphanScript)
	if _, err := w.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Teardown(context.Background(), 100*time.Millisecond); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := survivors(ps); len(left) != 1 {
		t.Fatalf("expected the scrubbed setsid orphan to escape, survivors: %v", left)
	}
}

// The guardian/gc path (posix.TeardownRecord from the record: no roots): an
// unmarked process that stayed in the run's process group is found through
// the group, which a marked process confirms.
func TestTeardownPOSIXFromRecord(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	_, ps := startLines(t, r, 2, `echo $$; env -u SNAKEPIT_RUN_ID /bin/sleep 1000 & echo $!; wait`)
	rec := r.Record()
	rep, err := posix.TeardownRecord(context.Background(), &rec, 0)
	if err != nil {
		t.Fatalf("TeardownPOSIX: %v", err)
	}
	if left := survivors(ps); len(left) > 0 {
		t.Fatalf("survivors %v (report %+v)", left, rep)
	}
	if _, err := record.Read(rec.ID); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("record left: %v", err)
	}
}

// The same, once the group has no marked process left to confirm it: the
// worker exited, and what it left in its group cleared its environment
// (env -i). The group's recorded session confirms it.
func TestTeardownPOSIXFromRecordUnmarkedGroup(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	w, ps := startLines(t, r, 1, `env -i /bin/sleep 1000 & echo $!`)
	if _, err := w.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The worker's session is ours; it may be 0 (init's session, or one
	// whose leader is outside our PID namespace), which is a session too.
	self, err := reaper.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rec := r.Record()
	if rec.PGID == 0 || rec.PGIDStart == 0 || rec.SID != self.Session {
		t.Fatalf("record has group %d session %d, want session %d: %+v", rec.PGID, rec.SID, self.Session, rec)
	}

	rep, err := posix.TeardownRecord(context.Background(), &rec, 0)
	if err != nil {
		t.Fatalf("TeardownPOSIX: %v", err)
	}
	if left := survivors(ps); len(left) > 0 {
		t.Fatalf("survivors %v (report %+v)", left, rep)
	}
}

func TestPOSIXIDInUse(t *testing.T) {
	r := newPOSIXRun(t, Options{Mode: ModePOSIX})
	_, err := Create(context.Background(), Options{ID: r.ID(), Mode: ModePOSIX})
	if !errors.Is(err, cgroup.ErrExists) {
		t.Fatalf("second POSIX run with ID %s: %v, want ErrExists", r.ID(), err)
	}
}

// Auto mode falls back only when the cgroupfs refuses us or there is none;
// ModeCgroup never falls back.
func TestModeSelection(t *testing.T) {
	privateRecords(t)
	ctx := context.Background()
	// A read-only cgroupfs refuses mkdir with EROFS: ErrPermission, the
	// same error an undelegated cgroupfs gives. Made on one locked thread
	// that moves into a mount namespace of its own, where a cgroup2
	// directory is bind-mounted read-only; the thread ends with its
	// goroutine, so nothing else ever sees that namespace.
	refused := privateParent(t)
	var r *Run
	var err, cgErr error
	onReadOnlyCgroupfs(t, refused, func() {
		r, err = Create(ctx, Options{CgroupParent: refused})
		_, cgErr = Create(ctx, Options{CgroupParent: refused, Mode: ModeCgroup})
	})
	if err != nil {
		t.Fatalf("auto mode with a refused parent: %v", err)
	}
	if _, terr := r.Teardown(ctx, 0); terr != nil {
		t.Error(terr)
	}
	if r.Mechanism() != record.MechanismPOSIX || !errors.Is(r.Fallback(), cgroup.ErrPermission) {
		t.Fatalf("mechanism %s, fallback %v; want posix because of ErrPermission", r.Mechanism(), r.Fallback())
	}
	if !errors.Is(cgErr, cgroup.ErrPermission) {
		t.Fatalf("ModeCgroup with a refused parent: %v, want ErrPermission", cgErr)
	}
}

// Bad parents and modes are argument errors, found before anything is made;
// they need neither root nor cgroup2.
func TestModeArguments(t *testing.T) {
	privateRecords(t)
	ctx := context.Background()
	// Outside cgroup2 altogether: a bad argument, in every mode.
	if _, err := Create(ctx, Options{CgroupParent: "/sys/snakepit-test-not-cgroup2"}); !errors.Is(err, ErrBadParent) {
		t.Fatalf("a parent outside cgroup2: %v, want ErrBadParent", err)
	}
	if _, err := Create(ctx, Options{CgroupParent: "relative/parent"}); err == nil {
		t.Fatal("a relative parent fell back instead of failing")
	}
	if _, err := Create(ctx, Options{Mode: "bogus"}); !errors.Is(err, ErrBadMode) {
		t.Fatalf("mode bogus: %v", err)
	}
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "cgroup": ModeCgroup, "posix": ModePOSIX} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("cgroups"); !errors.Is(err, ErrBadMode) {
		t.Errorf("ParseMode(cgroups): %v", err)
	}
}

// A run ID already taken by a run cgroup is an error in auto mode too, not
// a reason to fall back.
func TestAutoModeDoesNotFallBackOnIDInUse(t *testing.T) {
	r := newTestRun(t, Options{})
	privateRecords(t)
	// No guardian: a service started for this Create would put its socket
	// beside the records, in the temporary directory being removed.
	_, err := Create(context.Background(), Options{ID: r.ID(), NoGuardian: true})
	if !errors.Is(err, cgroup.ErrExists) {
		t.Fatalf("auto mode, ID in use: %v, want ErrExists", err)
	}
}

// onReadOnlyCgroupfs runs f on a locked thread in a private mount
// namespace in which dir is bind-mounted read-only over itself. The thread
// is never unlocked, so the runtime ends it with the goroutine.
func onReadOnlyCgroupfs(t *testing.T, dir string, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make / private: %w", err)
			return
		}
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", dir, err)
			return
		}
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			errc <- fmt.Errorf("remount %s read-only: %w", dir, err)
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
