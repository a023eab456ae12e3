//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// Tests of --no-cgroup, --mode, --pid-ns and the auto fallback.

// privateRecords points the records (and the guardians' locks) of
// everything started with env at a private directory, writable by uid.
func privateRecords(t *testing.T, uid int) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "snakepit-records-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), record.DirEnv+"="+filepath.Join(dir, "runs"))
}

// readyLines reads n lines from r, or fails after 30 s.
func readyLines(t *testing.T, r *os.File, n int) []string {
	t.Helper()
	c := make(chan []string, 1)
	go func() {
		var lines []string
		sc := bufio.NewScanner(r)
		for len(lines) < n && sc.Scan() {
			lines = append(lines, sc.Text())
		}
		c <- lines
	}()
	select {
	case l := <-c:
		if len(l) != n {
			t.Fatalf("got %q, want %d lines", l, n)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("no readiness after 30s")
	}
	return nil
}

// pinTree pins every process below pid (by parent links in /proc), except
// the subtree of the guardian, and kills them all at cleanup.
func pinTree(t *testing.T, pid int) []*reaper.Pinned {
	t.Helper()
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := reaper.ReadStat(p); err == nil && !st.Dead() {
			children[st.PPID] = append(children[st.PPID], p)
		}
	}
	var pins []*reaper.Pinned
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[p] {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/cmdline"); bytes.Contains(b, []byte(guardian.Command)) {
				continue
			}
			stack = append(stack, c)
			if id, err := reaper.IdentityOf(c); err == nil {
				if pin, err := reaper.Pin(id); err == nil {
					pins = append(pins, pin)
				}
			}
		}
	}
	t.Cleanup(func() {
		for _, p := range pins {
			_ = p.Signal(unix.SIGKILL)
			p.Close()
		}
	})
	return pins
}

func allExit(t *testing.T, pins []*reaper.Pinned, d time.Duration) {
	t.Helper()
	var left []int
	if !testenv.Within(d, func() bool {
		left = left[:0]
		for _, p := range pins {
			if !p.Exited() {
				left = append(left, p.PID)
			}
		}
		return len(left) == 0
	}) {
		t.Fatalf("pids %v still alive %v later", left, d)
	}
}

// hostile starts, besides a plain child, a setsid'd double-forked process
// that ignores SIGTERM, scrubs its environment and argv, and only then says
// "ready" (fd 3); then the command waits for its stdin to close.
const hostile = `sleep 1000 3>&- & setsid env -i /bin/sh -c 'trap "" TERM; echo ready >&3; exec 3>&-; exec sleep 1000' & read x; exit 0`

func TestRunNoCgroupLeavesNothing(t *testing.T) {
	env := privateRecords(t, 0)
	id := runid.Generate()
	cmd := snakepitCmd(t, "run", "--no-cgroup", "--grace", "200ms", "--run-id", id, "--", "sh", "-c", hostile)
	cmd.Env = env
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	readyLines(t, readyR, 1)
	pins := pinTree(t, cmd.Process.Pid)
	if len(pins) < 3 {
		t.Fatalf("only %d processes below the wrapper", len(pins))
	}
	stdin.Close()
	if code := exitStatus(t, cmd.Wait()); code != 0 {
		t.Fatalf("exit status %d; stderr: %s", code, stderr.String())
	}
	allExit(t, pins, 2*time.Second)
	if stderr.Len() != 0 {
		t.Errorf("--no-cgroup is no fallback and says nothing, got %q", stderr.String())
	}
	t.Setenv(record.DirEnv, strings.TrimPrefix(env[len(env)-1], record.DirEnv+"="))
	if _, err := record.Read(id); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("record left: %v", err)
	}
}

// TestPOSIXRunSparesItsNewGuardian: a POSIX `snakepit run` counts every
// child of the wrapper as the run's (orphans re-parented to it). When its
// guardian service dies, the wrapper starts the next one, a child of its
// own: the run's teardown must spare it, as it spares the first.
func TestPOSIXRunSparesItsNewGuardian(t *testing.T) {
	env := privateRecords(t, 0)
	t.Setenv(record.DirEnv, strings.TrimPrefix(env[len(env)-1], record.DirEnv+"="))
	// The service must outlive the wrapper by more than our last look.
	env = append(slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, guardian.IdleEnv+"=") }), guardian.IdleEnv+"=1m")
	cmd := snakepitCmd(t, "run", "--no-cgroup", "--", "sh", "-c", "echo ready; exec sleep 1000")
	cmd.Env = env
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd.Stdout = readyW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	readyLines(t, readyR, 1)
	pinService := func(why string, ok func(reaper.Identity) bool) *reaper.Pinned {
		t.Helper()
		var p *reaper.Pinned
		testenv.Eventually(t, 10*time.Second, why, func() bool {
			id, err := guardian.Probe()
			if err != nil || !ok(id) {
				return false
			}
			p, err = reaper.Pin(id)
			return err == nil
		})
		t.Cleanup(func() { _ = p.Signal(unix.SIGKILL); p.Close() })
		return p
	}
	old := pinService("the guardian service", func(reaper.Identity) bool { return true })
	if err := old.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	next := pinService("a new service, started by the wrapper", func(id reaper.Identity) bool {
		st, err := reaper.ReadStat(id.PID)
		return id.PID != old.PID && err == nil && st.PPID == cmd.Process.Pid
	})
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, cmd.Wait()); code != 128+int(unix.SIGTERM) {
		t.Fatalf("snakepit run exited %d, want %d", code, 128+int(unix.SIGTERM))
	}
	// A kill by the teardown was sent before the wrapper exited.
	if next.Exited() || reaper.Dying(next.PID) {
		t.Fatal("the run's teardown killed the guardian service the wrapper had started")
	}
}

func TestRunPidNS(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range [][]string{{"--mode", "cgroup"}, {"--no-cgroup"}} {
		if mode[0] == "--mode" {
			if _, err := cgroup.DefaultParent(); err != nil {
				testenv.Missing(t, "needs cgroup2: %v", err)
			}
		}
		id := runid.Generate()
		cleanupRun(t, id)
		args := append([]string{"run", "--pid-ns", "--run-id", id}, mode...)
		args = append(args, "--", "sh", "-c", `echo "$$ $(ls -d /proc/[0-9]* | wc -l)"; exit 7`)
		cmd := snakepitCmd(t, args...)
		cmd.Env = privateRecords(t, 0)
		out, err := cmd.Output()
		if code := exitStatus(t, err); code != 7 {
			t.Fatalf("%v: exit status %d, want 7 (output %q)", mode, code, out)
		}
		var pid, n int
		if _, err := fmt.Sscan(string(out), &pid, &n); err != nil || pid > 64 || n > 6 {
			t.Fatalf("%v: want a small PID of a new namespace and a /proc showing only it, got %q", mode, out)
		}
	}
}

// SIGKILL to a --pid-ns wrapper without any guardian: the kernel alone
// kills the namespace, setsid'd, scrubbed, SIGTERM-ignoring processes too.
func TestRunPidNSKernelCleansWithoutGuardian(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := snakepitCmd(t, "run", "--no-cgroup", "--pid-ns", "--no-guardian", "--", "sh", "-c", hostile)
	cmd.Env = privateRecords(t, 0)
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	readyLines(t, readyR, 1)
	pins := pinTree(t, cmd.Process.Pid)
	if len(pins) < 4 { // init, sh, sleep, the scrubbed one
		t.Fatalf("only %d processes below the wrapper", len(pins))
	}
	t0 := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	allExit(t, pins, 2*time.Second)
	t.Logf("SIGKILL to the wrapper: %d processes gone in %v without a guardian", len(pins), time.Since(t0))
}

// A SIGTERM to the wrapper stops the run even when the command ignores it:
// after the grace period the run is killed.
func TestRunSIGTERMIgnoringCommandIsKilledAfterGrace(t *testing.T) {
	cmd := snakepitCmd(t, "run", "--no-cgroup", "--grace", "300ms", "--", "sh", "-c", `trap "" TERM; echo ready >&3; exec 3>&-; while :; do sleep 0.05; done`)
	cmd.Env = privateRecords(t, os.Getuid())
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	readyLines(t, readyR, 1)
	t0 := time.Now()
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := exitStatus(t, cmd.Wait())
	took := time.Since(t0)
	if code != 128+9 || took < 300*time.Millisecond || took > 10*time.Second {
		t.Fatalf("exit %d after %v; want 137 (killed) after the 300ms grace", code, took)
	}
}

// asNobody prepares cmd to run as uid/gid 65534 from a copy of the binary
// that user can execute.
func asNobody(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	testenv.RequireRoot(t)
	dir, err := os.MkdirTemp("", "snakepit-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "snakepit")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd.Path = bin
	cmd.Dir = dir
	cmd.Env = privateRecords(t, 65534)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}

// Not root: auto mode falls back to POSIX mode and says so in one line;
// --mode cgroup refuses with 122 (permission denied on cgroupfs).
func TestRunFallsBackWithoutRoot(t *testing.T) {
	cmd := snakepitCmd(t, "run", "--", "sh", "-c", "exit 5")
	asNobody(t, cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if code := exitStatus(t, cmd.Run()); code != 5 {
		t.Fatalf("exit status %d, want 5; stderr %q", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "using POSIX mode") {
		t.Fatalf("want one line announcing POSIX mode, got %q", stderr.String())
	}
	if _, err := cgroup.DefaultParent(); err != nil {
		return // no cgroup2 at all: the fallback reason differs, nothing more to check
	}
	cmd = snakepitCmd(t, "run", "--mode", "cgroup", "--", "true")
	asNobody(t, cmd)
	stderr.Reset()
	cmd.Stderr = &stderr
	if code := exitStatus(t, cmd.Run()); code != exitPermission {
		t.Fatalf("--mode cgroup as nobody: exit %d, want %d; stderr %q", code, exitPermission, stderr.String())
	}
}

// Not root, --pid-ns: a user namespace makes it possible, and a SIGKILLed
// wrapper (its guardian killed too) leaves nothing: full containment
// without cgroups or privileges.
func TestRunNonRootPidNSContainment(t *testing.T) {
	cmd := snakepitCmd(t, "run", "--no-cgroup", "--pid-ns", "--", "sh", "-c", `id -u >&3; `+hostile)
	asNobody(t, cmd)
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd.ExtraFiles = []*os.File{readyW}
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	if l := readyLines(t, readyR, 2); l[0] != "65534" {
		t.Fatalf("the command runs as uid %s inside, want 65534 (mapped to itself)", l[0])
	}
	pins := pinTree(t, cmd.Process.Pid)
	if len(pins) < 4 {
		t.Fatalf("only %d processes below the wrapper; stderr %q", len(pins), stderr.String())
	}
	// Kill the guardian first, then the wrapper: only the kernel is left.
	if g := findGuardianOf(cmd.Process.Pid); g > 0 {
		_ = unix.Kill(g, unix.SIGKILL)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	allExit(t, pins, 2*time.Second)
}

func findGuardianOf(owner int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv := strings.Split(string(b), "\x00")
		if len(argv) > 3 && argv[1] == guardian.Command && argv[2] == "--owner-pid" && argv[3] == strconv.Itoa(owner) {
			return pid
		}
	}
	return 0
}

// The cost of --pid-ns per `snakepit run -- /bin/true` (no guardian, so
// only the run itself is measured), in cgroup mode and in POSIX mode.
func benchmarkRun(b *testing.B, args ...string) {
	testenv.RequireRoot(b)
	env := append(os.Environ(), record.DirEnv+"="+filepath.Join(b.TempDir(), "runs"))
	argv := append(append([]string{"run", "--no-guardian"}, args...), "--", "/bin/true")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(binPath, argv...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
}

func BenchmarkRunCgroup(b *testing.B)      { benchmarkRun(b, "--mode", "cgroup") }
func BenchmarkRunCgroupPidNS(b *testing.B) { benchmarkRun(b, "--mode", "cgroup", "--pid-ns") }
func BenchmarkRunPOSIX(b *testing.B)       { benchmarkRun(b, "--no-cgroup") }
func BenchmarkRunPOSIXPidNS(b *testing.B)  { benchmarkRun(b, "--no-cgroup", "--pid-ns") }

// Not root: `create` falls back to a POSIX run (one notice line), `exec`
// joins it through the marker, `kill` ends what joined.
func TestCreateExecKillPOSIXRun(t *testing.T) {
	owner := exec.Command("/bin/sleep", "1000")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })

	create := snakepitCmd(t, "create", "--no-guardian", "--owner-pid", strconv.Itoa(owner.Process.Pid))
	asNobody(t, create)
	env, dir := create.Env, create.Dir
	var stderr bytes.Buffer
	create.Stderr = &stderr
	out, err := create.Output()
	if code := exitStatus(t, err); code != 0 {
		t.Fatalf("create: exit %d: %s", code, stderr.String())
	}
	id := strings.TrimSpace(string(out))
	if runid.Validate(id) != nil || !strings.Contains(stderr.String(), "using POSIX mode") {
		t.Fatalf("create printed %q, stderr %q", out, stderr.String())
	}

	joined := snakepitCmd(t, "exec", id, "--", "sh", "-c", `echo "$SNAKEPIT_RUN_ID $$" >&3; exec 3>&-; exec sleep 1000`)
	asNobody(t, joined)
	joined.Env, joined.Dir, joined.Path = env, dir, create.Path
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	joined.ExtraFiles = []*os.File{readyW}
	if err := joined.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	done := make(chan struct{})
	go func() { _ = joined.Wait(); close(done) }()
	t.Cleanup(func() { _ = joined.Process.Kill(); <-done })
	if l := readyLines(t, readyR, 1); l[0] != id+" "+strconv.Itoa(joined.Process.Pid) {
		t.Fatalf("exec'd command says %q, want %q (marker, same PID)", l[0], id+" "+strconv.Itoa(joined.Process.Pid))
	}

	kill := snakepitCmd(t, "kill", "--grace", "100ms", id)
	asNobody(t, kill)
	kill.Env, kill.Dir, kill.Path = env, dir, create.Path
	if b, err := kill.CombinedOutput(); exitStatus(t, err) != 0 {
		t.Fatalf("kill: %s", b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the joined process survived snakepit kill")
	}
}
