//go:build linux

package snakepit

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// supervisorEnv makes the test binary a library supervisor
// (TestHelperSupervisor): it Creates a run under the parent named in the
// variable, starts a setsid'd, double-forked tree in it, prints the run
// cgroup and then sleeps until killed.
const supervisorEnv = "SNAKEPIT_TEST_SUPERVISOR"

func TestHelperSupervisor(t *testing.T) {
	parent := os.Getenv(supervisorEnv)
	if parent == "" {
		t.Skip("run by the guardian tests")
	}
	ctx := context.Background()
	r, err := Create(ctx, Options{CgroupParent: parent})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	w, err := r.Start(ctx, Command{Args: []string{"/bin/sh", "-c", "setsid sh -c 'sleep 3601 & sleep 3602 &' & sleep 3603"}})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	_ = w
	if f := os.Getenv(leakConnEnv); f != "" {
		if err := leakConnection(f); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
	}
	fmt.Println(r.CgroupPath())
	select {}
}

// leakConnEnv makes the helper supervisor hand its connection to the
// guardian service to a sleep outside the run (whose PID it writes to the
// file named), so that the connection outlives the supervisor.
const leakConnEnv = "SNAKEPIT_TEST_LEAK_CONN"

func leakConnection(pidFile string) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := unix.Getpeername(fd)
		if ua, ok := sa.(*unix.SockaddrUnix); err != nil || !ok || ua.Name != guardian.SocketPath() {
			continue
		}
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		holder := exec.Command("sleep", "3600")
		holder.ExtraFiles = []*os.File{os.NewFile(uintptr(dup), "guardian connection")}
		holder.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := holder.Start(); err != nil {
			return err
		}
		return os.WriteFile(pidFile, []byte(strconv.Itoa(holder.Process.Pid)), 0o600)
	}
	return errors.New("no connection to the guardian service")
}

// supervisor starts the helper supervisor (with env added to ours) and
// returns it, its run cgroup and pidfds of the run's processes once the
// tree is up.
func supervisor(t *testing.T, parent string, env ...string) (*exec.Cmd, string, map[int]int) {
	t.Helper()
	cmd := testenv.HelperProcess("TestHelperSupervisor", append(env, supervisorEnv+"="+parent)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartHelper(t, cmd)
	line, _ := bufio.NewReader(out).ReadString('\n')
	path := strings.TrimSpace(line)
	if !strings.HasPrefix(path, parent+"/") {
		t.Fatalf("supervisor: %q", line)
	}
	g := cgroup.At(path)
	// The setsid'd shell exits once it has forked its two sleeps; wait
	// for the settled tree (the outer sh and three sleeps, nothing else),
	// or a pidfd of that passing shell would read as harm done to the run.
	testenv.Eventually(t, 10*time.Second, "the run's settled tree: sh and 3 sleeps", func() bool {
		ps, _ := g.Procs()
		sleeps := 0
		for _, pid := range ps {
			if c, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil && strings.TrimSpace(string(c)) == "sleep" {
				sleeps++
			}
		}
		return len(ps) == 4 && sleeps == 3
	})
	return cmd, path, pidfdsOf(t, g)
}

// allGone waits until every process is dead and the run cgroup removed.
func allGone(t *testing.T, path string, fds map[int]int, within time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	testenv.Eventually(t, within, "run dead and removed", func() bool {
		_, err := os.Stat(path)
		return len(alive(fds)) == 0 && errors.Is(err, fs.ErrNotExist)
	})
	return time.Since(t0)
}

// TestGuardianServiceLibrarySupervisor: a Go program that Creates a run is
// guarded by default; SIGKILL of it leaves nothing, setsid'd and
// double-forked grandchildren included.
func TestGuardianServiceLibrarySupervisor(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	privateRecords(t)
	cmd, path, fds := supervisor(t, parent)
	t0 := time.Now()
	_ = cmd.Process.Kill()
	allGone(t, path, fds, 10*time.Second)
	t.Logf("SIGKILL of the library supervisor -> all gone in %v", time.Since(t0))
}

// TestGuardianServiceNoticesOwnerDeath: the service tears a run down when
// its owner dies even while the owner's connection stays open (here a
// process outside the run holds it): it watches a thread of the owner, and
// does not wait for the kernel to close the owner's files, which comes
// only after the owner's memory is torn down.
func TestGuardianServiceNoticesOwnerDeath(t *testing.T) {
	testenv.RequireRoot(t)
	if !guardian.ThreadNotice() {
		testenv.Missing(t, "needs PIDFD_THREAD (Linux 6.9)")
	}
	parent := privateParent(t)
	privateRecords(t)
	pidFile := filepath.Join(t.TempDir(), "holder")
	cmd, path, fds := supervisor(t, parent, leakConnEnv+"="+pidFile)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	holder, _ := strconv.Atoi(string(b))
	hfd, err := unix.PidfdOpen(holder, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(hfd, unix.SIGKILL, nil, 0)
		reaper.PidfdExited(hfd, 10*time.Second)
		unix.Close(hfd)
	})
	_ = cmd.Process.Kill()
	allGone(t, path, fds, 10*time.Second)
	if len(alive(map[int]int{holder: hfd})) != 1 {
		t.Fatal("the process holding the connection died: the run may have gone by EOF")
	}
}

// TestGuardianServiceDies: the service is SIGKILLed while a run is
// registered; the owner registers again with a new one, and a later SIGKILL
// of the owner still leaves nothing.
func TestGuardianServiceDies(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	privateRecords(t)
	cmd, path, fds := supervisor(t, parent)
	old := servicePID(t)
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var fresh int
	testenv.Eventually(t, 10*time.Second, "a new guardian service", func() bool {
		id, err := guardian.Probe()
		fresh = id.PID
		return err == nil && id.PID > 0 && id.PID != old
	})
	// The owner's registration reaches the new service after its
	// connection: wait until the service holds it (an fd on cgroup.kill).
	testenv.Eventually(t, 10*time.Second, "the run registered again", func() bool {
		return testenv.HoldsFile(fresh, filepath.Join(path, "cgroup.kill"))
	})
	if len(alive(fds)) != len(fds) {
		t.Fatal("the service's death hurt the run")
	}
	_ = cmd.Process.Kill()
	allGone(t, path, fds, 10*time.Second)
}

func servicePID(t *testing.T) int {
	t.Helper()
	id, err := guardian.Probe()
	if err != nil {
		t.Fatalf("no guardian service: %v", err)
	}
	if _, err := reaper.IdentityOf(id.PID); err != nil {
		t.Fatal(err)
	}
	return id.PID
}

// pinnedService returns the running service's PID and a pidfd of it, as
// alive takes it (closed at cleanup).
func pinnedService(t *testing.T) (int, map[int]int) {
	t.Helper()
	pid := servicePID(t)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return pid, map[int]int{pid: fd}
}

// TestGuardianServiceAdoptsOrphanedRuns: `snakepit create --owner-pid`
// registers its run and exits, so when the service is SIGKILLed nobody can
// register the run again. The next service (started by the next owner)
// adopts it from its record, and the owner's death still tears it down.
// The run's parent is a private one (not a known parent): the dead
// service noted it for the next.
func TestGuardianServiceAdoptsOrphanedRuns(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	privateRecords(t)
	owner, path := createOwnedT(t, parent)
	worker := exec.Command("sleep", "1001")
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = worker.Process.Kill(); _ = worker.Wait() })
	if err := cgroup.At(path).Move(worker.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fds := pidfdsOf(t, cgroup.At(path))
	old, oldFD := pinnedService(t)
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the old service gone", func() bool { return len(alive(oldFD)) == 0 })
	// The next owner starts the next service.
	next, err := Create(context.Background(), Options{CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = next.Teardown(context.Background(), 0) })
	fresh := servicePID(t)
	testenv.Eventually(t, 10*time.Second, "the orphaned run adopted (the new service holds its cgroup.kill)", func() bool {
		return testenv.HoldsFile(fresh, filepath.Join(path, "cgroup.kill"))
	})
	if len(alive(fds)) != len(fds) {
		t.Fatal("the run died before its owner")
	}
	_ = owner.Process.Kill()
	allGone(t, path, fds, 10*time.Second)
}

// TestGuardianServiceIdlesOutClean: once its last owner is gone (a
// `snakepit run` that exited), the service idles out and takes its socket
// and pid file with it.
func TestGuardianServiceIdlesOutClean(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	privateRecords(t)
	cmd := exec.Command(os.Getenv("SNAKEPIT_BIN"), "run", "--cgroup-parent", parent, "--", "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snakepit run: %v: %s", err, out)
	}
	testenv.Eventually(t, 10*time.Second, "the idle service gone, its socket and pid file with it", func() bool {
		_, errSock := os.Stat(guardian.SocketPath())
		_, errPID := os.Stat(guardian.PIDPath())
		return errors.Is(errSock, fs.ErrNotExist) && errors.Is(errPID, fs.ErrNotExist)
	})
}

// TestGuardianServiceIdleExitLosesNoRun: `create --owner-pid` registers its
// run and exits at once, so a registration the service never reads (it was
// idling out as the owner connected) would leave the run unwatched. With an
// idle time of a millisecond and four owners at a time, creates race
// services' exits.
func TestGuardianServiceIdleExitLosesNoRun(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	dir := filepath.Join(t.TempDir(), "runs")
	t.Setenv(record.DirEnv, dir)
	t.Setenv(guardian.IdleEnv, "1ms")
	var mu sync.Mutex
	services := map[int]bool{} // every service named by a record
	t.Cleanup(func() {
		// A service takes the start lock (creating the lock file) as it
		// idles out; the temporary directory goes only after the last
		// one has. Not only those records name: a create may have found
		// no pid file yet.
		testenv.Eventually(t, 10*time.Second, "every service gone", func() bool { return len(processesWithEnv(record.DirEnv+"="+dir)) == 0 })
	})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if err := createAndOrphan(parent, func(pid int) {
					mu.Lock()
					defer mu.Unlock()
					services[pid] = true
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	t.Logf("%d services took the 200 registrations", len(services))
	for err := range errs {
		t.Error(err)
	}
}

// createAndOrphan makes a run owned by a sleep (`create --owner-pid`), kills
// the sleep and waits for the run's cgroup to go. seen is told the service
// that took the registration.
func createAndOrphan(parent string, seen func(pid int)) error {
	owner, path, err := createOwned(parent)
	if err != nil {
		return err
	}
	if rec, err := record.ReadCgroup(path); err == nil && rec.Guardian != nil {
		seen(rec.Guardian.PID)
	}
	killOwner(owner)
	return waitGone(path, 10*time.Second)
}

// createOwned starts a sleep and makes a run owned by it with `snakepit
// create --owner-pid` under parent. It returns the owner, which the caller
// kills (killOwner), and the run cgroup.
func createOwned(parent string) (*exec.Cmd, string, error) {
	owner := exec.Command("sleep", "1000")
	if err := owner.Start(); err != nil {
		return nil, "", err
	}
	out, err := exec.Command(os.Getenv("SNAKEPIT_BIN"), "create", "--owner-pid", strconv.Itoa(owner.Process.Pid), "--cgroup-parent", parent).Output()
	if err != nil {
		killOwner(owner)
		return nil, "", fmt.Errorf("snakepit create: %w", err)
	}
	return owner, filepath.Join(parent, cgroup.Prefix+strings.TrimSpace(string(out))), nil
}

// createOwnedT is createOwned in a test: the owner is killed at cleanup.
func createOwnedT(t *testing.T, parent string) (*exec.Cmd, string) {
	t.Helper()
	owner, path, err := createOwned(parent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killOwner(owner) })
	return owner, path
}

// waitGone waits for directory path to be removed.
func waitGone(path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still there %v after its owner died", path, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGuardianServiceDiesAfterAnOwner: an owner (create --owner-pid style:
// another process) dies while the service is stopped, then the service is
// SIGKILLed. The client registers its runs again with a new service: the
// dead owner's run is torn down at once, and the live owner's is guarded.
func TestGuardianServiceDiesAfterAnOwner(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	privateRecords(t)
	ctx := context.Background()
	owner, o := ownerProc(t)
	orphan, err := Create(ctx, Options{CgroupParent: parent, Owner: o})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = orphan.Teardown(ctx, 0) })
	kept, err := Create(ctx, Options{CgroupParent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = kept.Teardown(ctx, 0) })
	for _, r := range []*Run{orphan, kept} {
		if _, err := r.Start(ctx, Command{Args: []string{"sleep", "1000"}}); err != nil {
			t.Fatal(err)
		}
	}
	orphanFDs := pidfdsOf(t, cgroup.At(orphan.CgroupPath()))
	keptFDs := pidfdsOf(t, cgroup.At(kept.CgroupPath()))
	old, oldFD := pinnedService(t)
	// Stopped, the service cannot see the owner die.
	if err := unix.Kill(old, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	killOwner(owner)
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the old service gone", func() bool { return len(alive(oldFD)) == 0 })
	allGone(t, orphan.CgroupPath(), orphanFDs, 10*time.Second)
	var fresh int
	testenv.Eventually(t, 10*time.Second, "the live owner's run registered with a new service", func() bool {
		id, err := guardian.Probe()
		fresh = id.PID
		return err == nil && fresh != old && testenv.HoldsFile(fresh, filepath.Join(kept.CgroupPath(), "cgroup.kill"))
	})
	if len(alive(keptFDs)) != len(keptFDs) {
		t.Fatal("the live owner's run was hurt")
	}
}

// processesWithEnv lists the processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range strings.Split(string(b), "\x00") {
			if v == kv {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// TestGuardianServiceLeavesARemovedDirectory: a service whose directory
// was removed while it ran (a test's temporary directory) does not make it
// again as it idles out.
func TestGuardianServiceLeavesARemovedDirectory(t *testing.T) {
	testenv.RequireRoot(t)
	parent := privateParent(t)
	base := t.TempDir()
	dir := filepath.Join(base, "svc")
	t.Setenv(record.DirEnv, filepath.Join(dir, "runs"))
	t.Setenv(guardian.IdleEnv, "1ms")
	owner, path := createOwnedT(t, parent)
	_, svcFD := pinnedService(t) // watching the owner: not idle
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_ = owner.Process.Kill()
	if err := waitGone(path, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the service idled out", func() bool { return len(alive(svcFD)) == 0 })
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the service made its removed directory again: %v", err)
	}
}
