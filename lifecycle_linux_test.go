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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// privateParent makes a cgroup parent no other test or developer looks in
// (it is not a known parent) and removes it at the end; runs made under it
// are torn down first (their cleanups run before this one).
func privateParent(t *testing.T) string {
	t.Helper()
	m := testenv.RequireCgroup2(t)
	p := filepath.Join(m.Path, "sptest-"+runid.Generate())
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever is left under it fails the test after being removed.
		runs, _ := inventory.ListRunCgroups(p)
		for id, path := range runs {
			t.Errorf("run %s left under %s", id, p)
			if g, err := cgroup.Open(path); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, _ = containment.TeardownGroup(ctx, g, 0)
				cancel()
			}
		}
		if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("remove private parent: %v", err)
		}
	})
	return p
}

// ownerProc starts a process to act as a run's owner and returns it with
// its record.Owner; the test kills it to simulate a dead supervisor. It is killed
// and reaped at cleanup in any case.
func ownerProc(t *testing.T) (*exec.Cmd, record.Owner) {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	o, err := record.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, o
}

func killOwner(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// sleepers starts a worker that leaves n setsid'd grandchildren behind and
// waits until the run holds them all.
func sleepers(t *testing.T, r *Run, n int) {
	t.Helper()
	script := "i=0; while [ $i -lt " + strconv.Itoa(n) + " ]; do setsid sleep 300 & i=$((i+1)); done; exec sleep 300"
	if _, err := r.Start(context.Background(), Command{Args: []string{"sh", "-c", script}}); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, r.Cgroup(), n+1)
}

// unmarkedSleepers starts, straight into g, a shell that leaves n setsid'd
// sleepers, without the run-ID marker, and waits until they are all there.
// They die with g's teardown; the shell is reaped at cleanup.
func unmarkedSleepers(t *testing.T, g *cgroup.Group, n int) {
	t.Helper()
	script := "i=0; while [ $i -lt " + strconv.Itoa(n) + " ]; do setsid sleep 300 & i=$((i+1)); done; exec sleep 300"
	cmd := exec.Command("sh", "-c", script)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, runid.EnvVar+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: dirFD(t, g)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitProcs(t, g, n+1)
}

func TestOwnerCheck(t *testing.T) {
	self, err := record.Self()
	if err != nil {
		t.Fatal(err)
	}
	if alive, why := self.Check(); !alive {
		t.Fatalf("Self not alive: %s", why)
	}
	cmd, o := ownerProc(t)
	if !o.Alive() {
		t.Fatal("fresh owner not alive")
	}
	reused := o
	reused.Start++
	if alive, why := reused.Check(); alive || !strings.Contains(why, "reused") {
		t.Errorf("other start time: alive=%v (%s)", alive, why)
	}
	otherBoot := o
	otherBoot.BootID = "00000000-0000-0000-0000-000000000000"
	if alive, why := otherBoot.Check(); alive || !strings.Contains(why, "boot") {
		t.Errorf("other boot: alive=%v (%s)", alive, why)
	}
	otherNS := o
	otherNS.PID, otherNS.PidNS = 999999999, 1
	if alive, _ := otherNS.Check(); !alive {
		t.Errorf("owner in another PID namespace judged dead: must be assumed alive")
	}
	if alive, _ := (record.Owner{}).Check(); alive {
		t.Errorf("zero owner judged alive")
	}
	killOwner(cmd)
	if alive, why := o.Check(); alive || !strings.Contains(why, "gone") {
		// On a busy host the PID may already be reused: then "reused".
		if alive || !strings.Contains(why, "reused") {
			t.Errorf("dead owner: alive=%v (%s)", alive, why)
		}
	}
}

func TestCreateWritesRecordBeforeWorkers(t *testing.T) {
	r := newTestRun(t, Options{Grace: 3 * time.Second})
	rec, err := record.ReadCgroup(r.CgroupPath())
	if err != nil {
		t.Fatal(err)
	}
	self, _ := record.Self()
	if rec.ID != r.ID() || rec.Mechanism != record.MechanismCgroup || !rec.Owner.Same(self) ||
		rec.Grace != 3*time.Second || rec.Cgroup != r.CgroupPath() || time.Since(rec.Created) > time.Minute {
		t.Fatalf("record %+v", rec)
	}
	if rec.Owner.BootID == "" || rec.Owner.Start == 0 {
		t.Fatalf("owner identity incomplete: %+v", rec.Owner)
	}
	if stale, why := record.Stale(rec); stale {
		t.Fatalf("own run stale: %s", why)
	}
	if got := r.Record(); got.ID != rec.ID || !got.Created.Equal(rec.Created) {
		t.Fatalf("Run.Record() = %+v, xattr %+v", got, rec)
	}
}

func TestCreateRecordsGivenOwner(t *testing.T) {
	testenv.RequireCgroup2(t)
	cmd, _ := ownerProc(t)
	r := newTestRun(t, Options{Owner: record.Owner{PID: cmd.Process.Pid}})
	rec, err := record.ReadCgroup(r.CgroupPath())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := reaper.ReadStat(cmd.Process.Pid)
	if rec.Owner.PID != cmd.Process.Pid || rec.Owner.Start != st.Start {
		t.Fatalf("owner %+v, want pid %d start %d", rec.Owner, cmd.Process.Pid, st.Start)
	}
	killOwner(cmd)
	if stale, why := record.Stale(rec); !stale {
		t.Fatalf("run of dead owner not stale (%s)", why)
	}
}

func TestCreateRejectsDeadOwner(t *testing.T) {
	parent := privateParent(t)
	cmd, o := ownerProc(t)
	killOwner(cmd)
	id := runid.Generate()
	if _, err := Create(context.Background(), Options{ID: id, CgroupParent: parent, Owner: record.Owner{PID: o.PID}}); err == nil {
		// Only possible if the PID was reused meanwhile; then the owner is
		// that live process, which is what the caller asked for.
		if alive, _ := o.Check(); !alive {
			t.Logf("PID %d reused meanwhile", o.PID)
		}
		g, _ := inventory.Lookup(id, parent)
		_, _ = containment.TeardownGroup(context.Background(), g, 0)
		return
	}
	if _, err := os.Stat(filepath.Join(parent, cgroup.Prefix+id)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cgroup made for a run whose owner is dead: %v", err)
	}
}

func TestFileRecords(t *testing.T) {
	privateRecords(t)
	self, _ := record.Self()
	rec := &record.Record{ID: runid.Generate(), Mechanism: record.MechanismPOSIX, Owner: self, Created: time.Now().UTC(), Grace: time.Second, PGID: 42}
	if err := record.Write(rec); err != nil {
		t.Fatal(err)
	}
	got, err := record.Read(rec.ID)
	if err != nil || got.ID != rec.ID || got.PGID != 42 || !got.Owner.Same(self) || got.Version != record.FormatVersion {
		t.Fatalf("ReadRecord = %+v, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(record.Dir(), "zzzzzzz.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := record.List()
	if err != nil || len(list) != 1 || list[0].ID != rec.ID {
		t.Fatalf("ListRecords = %+v, %v (malformed file must be skipped)", list, err)
	}
	for _, bad := range []string{"../../etc/passwd", "ABC", ""} {
		if _, err := record.Read(bad); !errors.Is(err, runid.ErrInvalid) {
			t.Errorf("ReadRecord(%q) = %v, want ErrInvalid", bad, err)
		}
		if err := record.Write(&record.Record{ID: bad, Mechanism: record.MechanismPOSIX}); !errors.Is(err, runid.ErrInvalid) {
			t.Errorf("WriteRecord(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := record.Remove(rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := record.Read(rec.ID); !errors.Is(err, record.ErrNoRecord) {
		t.Fatalf("after remove: %v", err)
	}
	if err := record.Remove(rec.ID); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestTeardownOwnedTakesOnlyTheOwnersRuns(t *testing.T) {
	parent := privateParent(t)
	cmd, o := ownerProc(t)
	// Unguarded: TeardownOwned itself is under test.
	mine1 := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true})
	mine2 := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true})
	other := newTestRun(t, Options{CgroupParent: parent})
	for _, r := range []*Run{mine1, mine2, other} {
		sleepers(t, r, 3)
	}
	fds := pidfdsOf(t, other.Cgroup())
	killOwner(cmd)
	got, err := inventory.TeardownOwned(context.Background(), o, 0, parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("tore down %+v, want the owner's 2 runs", got)
	}
	for _, r := range []*Run{mine1, mine2} {
		if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("run %s of the dead owner still there", r.ID())
		}
	}
	if a := alive(fds); len(a) != len(fds) {
		t.Fatalf("another owner's run was hurt: %d of %d processes alive", len(a), len(fds))
	}
}

func TestRunGuardianActsAtOnceWhenOwnerAlreadyGone(t *testing.T) {
	parent := privateParent(t)
	privateRecords(t)
	cmd, o := ownerProc(t)
	r := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true})
	sleepers(t, r, 2)
	killOwner(cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := guardian.Run(ctx, guardian.Options{Owner: o, Parents: []string{parent}})
	if err != nil || !rep.OwnerWasGone || len(rep.Torn) != 1 {
		t.Fatalf("RunGuardian = %+v, %v", rep, err)
	}
	if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("run still there")
	}
}

func TestRunGuardianWatchesOwner(t *testing.T) {
	parent := privateParent(t)
	privateRecords(t)
	cmd, o := ownerProc(t)
	// The exec'd guardian's own test: the service would act first.
	r := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true})
	sleepers(t, r, 5)
	fds := pidfdsOf(t, r.Cgroup())

	type result struct {
		rep guardian.Report
		err error
	}
	done := make(chan result, 1)
	gctx, gcancel := context.WithCancel(context.Background())
	defer gcancel()
	go func() {
		rep, err := guardian.Run(gctx, guardian.Options{Owner: o, Parents: []string{parent}})
		done <- result{rep, err}
	}()
	// Once the first guardian holds the owner's lock, a second one steps
	// aside at once.
	waitLockHeld(t, record.GuardianLockPath(o))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	rep2, err := guardian.Run(ctx2, guardian.Options{Owner: o, Parents: []string{parent}})
	if err != nil || !rep2.Deduplicated {
		t.Fatalf("second guardian: %+v, %v", rep2, err)
	}
	select {
	case res := <-done:
		t.Fatalf("guardian returned while the owner lives: %+v, %v", res.rep, res.err)
	default:
	}
	if a := alive(fds); len(a) != len(fds) {
		t.Fatalf("processes died while the owner lives")
	}
	t0 := time.Now()
	killOwner(cmd)
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("guardian did not act on the owner's death")
	}
	took := time.Since(t0)
	if res.err != nil || len(res.rep.Torn) != 1 {
		t.Fatalf("guardian: %+v, %v", res.rep, res.err)
	}
	if a := alive(fds); len(a) > 0 {
		t.Fatalf("survivors: %v", a)
	}
	t.Logf("owner killed -> %d processes gone and run removed in %v", len(fds), took)
}

// waitLockHeld waits (flock has no notification) until someone holds the
// flock on path.
func waitLockHeld(t *testing.T, path string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "someone holds the guardian lock "+path, func() bool {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		defer unix.Close(fd)
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			_ = unix.Flock(fd, unix.LOCK_UN)
		}
		return errors.Is(err, unix.EWOULDBLOCK)
	})
}

func TestRunGuardianStopsOnCancel(t *testing.T) {
	privateRecords(t)
	_, o := ownerProc(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := guardian.Run(ctx, guardian.Options{Owner: o}); done <- err }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RunGuardian after cancel = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunGuardian ignores ctx")
	}
}

func TestGCRemovesStaleAndSparesLive(t *testing.T) {
	parent := privateParent(t)
	privateRecords(t)
	cmd, o := ownerProc(t)
	live := newTestRun(t, Options{CgroupParent: parent})
	// Unguarded: gc, not the guardian, must find it stale.
	stale := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true})
	sleepers(t, live, 3)
	// Unmarked: another developer's global gc (same host) would otherwise
	// be free to reap this stale run's processes before ours looks.
	unmarkedSleepers(t, stale.Cgroup(), 3)
	liveFDs := pidfdsOf(t, live.Cgroup())
	staleFDs := pidfdsOf(t, stale.Cgroup())

	// record.Record-less runs: one populated (left alone), one empty (removed).
	populated, err := cgroup.Create(parent, cgroup.Prefix+runid.Generate())
	if err != nil {
		t.Fatal(err)
	}
	hand := exec.Command("sleep", "300")
	hand.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: dirFD(t, populated)}
	if err := hand.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = hand.Process.Kill()
		_ = hand.Wait()
		_ = populated.Remove(context.Background())
	})
	empty, err := cgroup.Create(parent, cgroup.Prefix+runid.Generate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = empty.Remove(context.Background()) })
	ids := []string{live.ID(), stale.ID(), filepath.Base(populated.Path())[len(cgroup.Prefix):], filepath.Base(empty.Path())[len(cgroup.Prefix):]}

	killOwner(cmd)
	opts := inventory.GCOptions{Parents: []string{parent}, OnlyParents: true, RunIDs: ids, MinAge: time.Nanosecond}
	dry := opts
	dry.DryRun = true
	rep, err := inventory.GC(context.Background(), dry)
	if err != nil {
		t.Fatal(err)
	}
	if len(alive(staleFDs)) != len(staleFDs) {
		t.Fatal("dry run killed something")
	}
	if !hasItem(rep, stale.ID(), inventory.GCWouldRemove) || !hasItem(rep, ids[3], inventory.GCWouldRemove) || !hasItem(rep, ids[2], inventory.GCSkipped) {
		t.Fatalf("dry run report: %+v", rep.Items)
	}
	rep, err = inventory.GC(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", rep)
	if !hasItem(rep, stale.ID(), inventory.GCRemoved) || !hasItem(rep, ids[3], inventory.GCRemoved) || !hasItem(rep, ids[2], inventory.GCSkipped) || rep.Live != 1 {
		t.Fatalf("gc report: %+v", rep)
	}
	for _, it := range rep.Items {
		if it.ID == live.ID() {
			t.Fatalf("gc touched the live run: %+v", it)
		}
	}
	if a := alive(staleFDs); len(a) > 0 {
		t.Fatalf("stale run survivors: %v", a)
	}
	if a := alive(liveFDs); len(a) != len(liveFDs) {
		t.Fatalf("live run hurt: %d of %d alive", len(a), len(liveFDs))
	}
	if err := unix.Kill(hand.Process.Pid, 0); err != nil {
		t.Fatalf("process of a record-less run was killed: %v", err)
	}
	if _, err := os.Stat(empty.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("empty record-less run not removed")
	}
}

func dirFD(t *testing.T, g *cgroup.Group) int {
	t.Helper()
	f, err := g.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func hasItem(rep inventory.GCReport, id, action string) bool {
	for _, it := range rep.Items {
		if it.ID == id && it.Action == action {
			return true
		}
	}
	return false
}

// TestGCKillsOrphanedMarkedProcesses: gc kills a marked process only when
// snakepit knows its run ID and the run is stale: here a process outside
// its run cgroup whose owner died. A marker alone is never enough: a
// process marked with a run ID snakepit does not know (no cgroup, no
// record), in its environment or argv, is spared, and so is one of a
// live POSIX run.
func TestGCKillsOrphanedMarkedProcesses(t *testing.T) {
	privateRecords(t)
	testenv.RequireRoot(t)
	parent := privateParent(t)
	ownerCmd, deadOwner := ownerProc(t)
	stale := newTestRun(t, Options{CgroupParent: parent, Owner: deadOwner, NoGuardian: true}) // gc, not the guardian, finds it stale
	unknownID, liveID := runid.Generate(), runid.Generate()
	start := func(env string, args ...string) *exec.Cmd {
		c := exec.Command(args[0], args[1:]...)
		if env != "" {
			c.Env = append(os.Environ(), runid.EnvVar+"="+env)
		}
		// A group of its own: the cleanup kills the sh's sleep too.
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Kill(-c.Process.Pid, unix.SIGKILL); _ = c.Wait() })
		return c
	}
	orphan := start(stale.ID(), "sleep", "300") // outside its run's cgroup
	unknownEnv := start(unknownID, "sleep", "300")
	unknownArgv := start("", "sh", "-c", "sleep 300; :", "--run-id", unknownID) // sh stays, marked

	// A worker of a live run whose argv names the stale run: its own
	// run cgroup says whose it is, not the marker.
	live := newTestRun(t, Options{CgroupParent: parent, NoGuardian: true})
	inLive, err := live.Start(context.Background(), Command{Args: []string{"sh", "-c", "sleep 300; :", "--run-id", stale.ID()}})
	if err != nil {
		t.Fatal(err)
	}

	posixLive := start(liveID, "sleep", "300")
	self, _ := record.Self()
	if err := record.Write(&record.Record{ID: liveID, Mechanism: record.MechanismPOSIX, Owner: self, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*exec.Cmd{orphan, unknownEnv, posixLive} {
		waitComm(t, c.Process.Pid, "sleep")
	}
	if m, err := reaper.ReadStat(unknownArgv.Process.Pid); err != nil || m.Dead() {
		t.Fatalf("argv-marked sh: %+v, %v", m, err)
	}
	killOwner(ownerCmd)
	rep, err := inventory.GC(context.Background(), inventory.GCOptions{Parents: []string{parent}, OnlyParents: true,
		RunIDs: []string{stale.ID(), unknownID, liveID}, Grace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !hasItem(rep, stale.ID(), inventory.GCKilled) || hasItem(rep, unknownID, inventory.GCKilled) || hasItem(rep, liveID, inventory.GCKilled) {
		t.Fatalf("gc report: %+v", rep.Items)
	}
	_ = orphan.Wait()
	if ws := orphan.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGTERM {
		t.Errorf("orphan ended by %v, want SIGTERM", ws.Signal())
	}
	for name, pid := range map[string]int{"unknown run ID in env": unknownEnv.Process.Pid, "unknown run ID in argv": unknownArgv.Process.Pid,
		"live POSIX run": posixLive.Process.Pid, "live run's worker naming the stale run": inLive.PID()} {
		if err := unix.Kill(pid, 0); err != nil {
			t.Errorf("%s: process killed: %v", name, err)
		}
	}
}

func waitComm(t *testing.T, pid int, comm string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("pid %d runs %s", pid, comm), func() bool {
		st, err := reaper.ReadStat(pid)
		return err == nil && st.Comm == comm
	})
}

// TestGCRacingLiveSupervisor runs gc in a loop while a live supervisor keeps
// creating runs, starting workers and tearing them down: no worker may be
// hurt by gc, and gc must report nothing about those runs.
func TestGCRacingLiveSupervisor(t *testing.T) {
	parent := privateParent(t)
	privateRecords(t)
	const rounds = 15
	ids := make([]string, rounds)
	for i := range ids {
		ids[i] = runid.Generate()
	}
	var passes atomic.Int64
	stop := make(chan struct{})
	var gcErr error // read once gcErrSet is, or after wg.Wait
	var gcErrSet atomic.Bool
	var bad []inventory.GCItem
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// The default MinAge: a run cgroup without a record yet is one
			// that Create is making (its record comes right after the
			// mkdir), and gc leaves it alone for that long.
			rep, err := inventory.GC(context.Background(), inventory.GCOptions{Parents: []string{parent}, OnlyParents: true, RunIDs: ids})
			if err != nil {
				gcErr = err
				gcErrSet.Store(true)
				return
			}
			bad = append(bad, rep.Items...)
			passes.Add(1)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	ctx := context.Background()
	for i := 0; i < rounds; i++ {
		r, err := Create(ctx, Options{ID: ids[i], CgroupParent: parent})
		if err != nil {
			t.Fatal(err)
		}
		w, err := r.Start(ctx, Command{Args: []string{"sh", "-c", "setsid sleep 300 & exec sleep 300"}})
		if err != nil {
			_, _ = r.Teardown(ctx, 0)
			t.Fatal(err)
		}
		// Both processes up (the setsid'd one is forked after Start
		// returns), then at least two full gc passes see the run.
		if !testenv.Within(10*time.Second, func() bool {
			procs, _ := r.Cgroup().ProcsRecursive()
			return len(procs) == 2
		}) {
			_, _ = r.Teardown(ctx, 0)
			t.Fatal("the worker and its setsid'd child did not both appear within 10 s")
		}
		p := passes.Load()
		if !testenv.Within(60*time.Second, func() bool { return passes.Load() >= p+2 || gcErrSet.Load() }) {
			_, _ = r.Teardown(ctx, 0)
			t.Fatal("gc made no two passes within 60 s")
		}
		hurt := false
		select {
		case <-w.Done():
			hurt = true
		default:
		}
		procs, _ := r.Cgroup().ProcsRecursive()
		if _, err := r.Teardown(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if hurt || len(procs) != 2 {
			t.Fatalf("round %d: live run hurt by gc (worker exited: %v, %d of 2 processes left)", i, hurt, len(procs))
		}
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	if len(bad) > 0 {
		t.Fatalf("gc acted on live runs: %+v", bad)
	}
	t.Logf("%d gc passes raced %d live runs", passes.Load(), rounds)
}

func TestKillRunBadInput(t *testing.T) {
	privateRecords(t)
	for _, id := range []string{"", "../../x", "ABCDEFG", "abc", "abc12345", "abc 123"} {
		if _, err := inventory.KillRun(context.Background(), id, 0); !errors.Is(err, runid.ErrInvalid) {
			t.Errorf("KillRun(%q) = %v, want ErrInvalid", id, err)
		}
	}
	if _, err := inventory.KillRun(context.Background(), runid.Generate(), 0); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("KillRun(unknown) = %v, want ErrUnknownRun", err)
	}
}

// KillRun with grace < 0 takes the run's recorded grace; a recorded 0 (a
// run made without one) is the default, not "no grace": the SIGTERM pass
// happens either way.
func TestKillRunTearsDown(t *testing.T) {
	parent := privateParent(t)
	for _, grace := range []time.Duration{50 * time.Millisecond, 0} {
		r := newTestRun(t, Options{CgroupParent: parent, Grace: grace})
		sleepers(t, r, 3)
		fds := pidfdsOf(t, r.Cgroup())
		rep, err := inventory.KillRun(context.Background(), r.ID(), -1, parent)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Terminated != 4 || len(alive(fds)) > 0 {
			t.Fatalf("KillRun of a run recorded with grace %v: %+v, alive %v", grace, rep, alive(fds))
		}
		if _, err := inventory.KillRun(context.Background(), r.ID(), -1, parent); !errors.Is(err, ErrUnknownRun) {
			t.Fatalf("second inventory.KillRun = %v, want ErrUnknownRun", err)
		}
	}
}

// TestRunCgroupDeletedByHand: an empty run cgroup can be removed under a
// live run; the run then reports it clearly, and nothing else is touched.
// A populated one cannot be removed at all.
func TestRunCgroupDeletedByHand(t *testing.T) {
	parent := privateParent(t)
	busy := newTestRun(t, Options{CgroupParent: parent})
	sleepers(t, busy, 1)
	if err := unix.Rmdir(busy.CgroupPath()); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("rmdir of a populated run cgroup = %v, want EBUSY", err)
	}
	fds := pidfdsOf(t, busy.Cgroup())

	r := newTestRun(t, Options{CgroupParent: parent})
	if err := unix.Rmdir(r.CgroupPath()); err != nil {
		t.Fatal(err)
	}
	_, err := r.Start(context.Background(), Command{Args: []string{"sleep", "300"}})
	if err == nil {
		t.Fatal("Start into a removed cgroup succeeded")
	}
	t.Logf("Start after rmdir: %v", err)
	if _, err := inventory.KillRun(context.Background(), r.ID(), 0, parent); !errors.Is(err, ErrUnknownRun) {
		t.Fatalf("KillRun of removed run = %v, want ErrUnknownRun", err)
	}
	rep, err := inventory.GC(context.Background(), inventory.GCOptions{Parents: []string{parent}, OnlyParents: true, RunIDs: []string{r.ID(), busy.ID()}})
	if err != nil || len(rep.Items) > 0 {
		t.Fatalf("gc after hand removal: %+v, %v", rep, err)
	}
	if a := alive(fds); len(a) != len(fds) {
		t.Fatalf("a removal by hand elsewhere hurt another run: %d of %d alive", len(a), len(fds))
	}
}

func TestListRuns(t *testing.T) {
	parent := privateParent(t)
	r := newTestRun(t, Options{CgroupParent: parent})
	if _, err := r.Start(context.Background(), Command{Args: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, r.Cgroup(), 1)
	// The worker is in the cgroup from its first instruction, before its
	// exec has finished: until then its cmdline is still being replaced.
	// Re-list (bounded) until the exec is visible.
	var got *inventory.RunInfo
	testenv.Within(10*time.Second, func() bool {
		runs, err := inventory.ListRuns(context.Background(), inventory.ListOptions{Tree: true, Parents: []string{parent}})
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		for i := range runs {
			if runs[i].ID == r.ID() {
				got = &runs[i]
			}
		}
		if got == nil {
			t.Fatalf("run %s not listed in %+v", r.ID(), runs)
		}
		return len(got.Processes) == 1 && got.Processes[0].Cmdline == "sleep 300"
	})
	if got.Mechanism != record.MechanismCgroup || got.Cgroup != r.CgroupPath() || got.OwnerPID != os.Getpid() ||
		!got.OwnerAlive || !got.HasRecord || got.Procs != 1 || got.AgeSeconds < 0 || got.AgeSeconds > 60 {
		t.Fatalf("run info %+v", got)
	}
	if len(got.Processes) != 1 || got.Processes[0].Cmdline != "sleep 300" {
		t.Fatalf("processes %+v", got.Processes)
	}
}

// TestFileRecordFallback: where cgroupfs has no user xattrs (Linux < 5.7:
// EOPNOTSUPP), the ownership record goes to a file; the run is still found
// by its cgroup, judged by that record, torn down by gc, and the record
// file removed with it. The live run's record and cgroup stay.
func TestFileRecordFallback(t *testing.T) {
	parent := privateParent(t)
	recs := filepath.Join(t.TempDir(), "runs")
	t.Setenv(record.DirEnv, recs)
	t.Cleanup(record.NoXattrsForTest())

	cmd, o := ownerProc(t)
	live := newTestRun(t, Options{CgroupParent: parent})
	stale := newTestRun(t, Options{CgroupParent: parent, Owner: o, NoGuardian: true}) // gc, not the guardian, finds it stale
	for _, r := range []*Run{live, stale} {
		if _, err := os.Stat(filepath.Join(recs, r.ID()+".json")); err != nil {
			t.Fatalf("run %s: no file record: %v", r.ID(), err)
		}
		if n, err := unix.Getxattr(r.CgroupPath(), record.Xattr, make([]byte, 64)); err == nil {
			t.Fatalf("run %s: xattr written (%d bytes) although setxattr failed", r.ID(), n)
		}
	}
	rec, err := record.ReadCgroup(stale.CgroupPath())
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Owner.Same(o) || rec.Cgroup != stale.CgroupPath() {
		t.Fatalf("record through the fallback: %+v", rec)
	}
	unmarkedSleepers(t, stale.Cgroup(), 2)
	staleFDs := pidfdsOf(t, stale.Cgroup())

	killOwner(cmd)
	rep, err := inventory.GC(context.Background(), inventory.GCOptions{Parents: []string{parent}, OnlyParents: true,
		RunIDs: []string{live.ID(), stale.ID()}, MinAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", rep)
	if !hasItem(rep, stale.ID(), inventory.GCRemoved) || rep.Live != 1 {
		t.Fatalf("gc report: %+v", rep)
	}
	if a := alive(staleFDs); len(a) > 0 {
		t.Fatalf("stale run survivors: %v", a)
	}
	if _, err := os.Stat(stale.CgroupPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale run cgroup left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(recs, stale.ID()+".json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale run's record file left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(recs, live.ID()+".json")); err != nil {
		t.Fatalf("live run's record file: %v", err)
	}
	if _, err := os.Stat(live.CgroupPath()); err != nil {
		t.Fatalf("live run cgroup: %v", err)
	}
	// Torn down by its owner, a run takes its record file with it.
	if _, err := live.Teardown(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(recs, live.ID()+".json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("live run's record file left after its Teardown: %v", err)
	}
}
