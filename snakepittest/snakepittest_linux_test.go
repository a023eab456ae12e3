//go:build linux

package snakepittest_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/snakepittest"
)

// selfTestEnv gates the tests that are run only as a subprocess of
// TestHelperFailsLeakyTest and TestHelperPassesCleanTest.
const selfTestEnv = "SNAKEPITTEST_SELFTEST"

func TestMain(m *testing.M) {
	flag.Parse()
	// The Example needs root and cgroup2 like the tests; an Example cannot
	// skip, so without them only the tests (which skip) are run.
	if _, err := cgroup.FindMount(); (os.Geteuid() != 0 || err != nil) && !testenv.InCI() {
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			_ = f.Value.Set("^Test")
		}
	}
	os.Exit(testenv.MainWithGuardian(m))
}

// TestSelfLeaky is the deliberately leaky test: a double-forked, setsid'd
// sleeper outlives the test.
func TestSelfLeaky(t *testing.T) {
	if os.Getenv(selfTestEnv) != "leaky" {
		t.Skip("run by TestHelperFailsLeakyTest")
	}
	r := snakepittest.New(t)
	if err := r.Command("sh", "-c", "setsid sleep 3599 >/dev/null 2>&1 &").Run(); err != nil {
		t.Fatal(err)
	}
	// Let the leak get as far as exec'ing sleep, so it has a stable name.
	waitFor(t, r, "sleep 3599")
	fmt.Printf("CGROUP=%s\n", r.CgroupPath())
}

// TestSelfClean starts processes and ends all of them properly.
func TestSelfClean(t *testing.T) {
	if os.Getenv(selfTestEnv) != "clean" {
		t.Skip("run by TestHelperPassesCleanTest")
	}
	r := snakepittest.New(t)
	out, err := r.Command("sh", "-c", "echo ok").Output()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("output %q, %v", out, err)
	}
	cmd := r.Command("sleep", "3598")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	// Killed but never waited for: dying, not a leak.
	cmd2 := r.Command("sleep", "3597")
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	_ = cmd2.Process.Kill()
	fmt.Printf("CGROUP=%s\n", r.CgroupPath())
}

// waitFor waits (no event exists for exec) until a process with command
// line cmdline is in the run.
func waitFor(t *testing.T, r *snakepittest.Run, cmdline string) {
	t.Helper()
	if !testenv.Within(30*time.Second, func() bool {
		for _, p := range r.Procs() {
			if p.Cmdline == cmdline {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no %q in the run: %v", cmdline, r.Procs())
	}
}

func runSelf(t *testing.T, mode, name string) (string, error) {
	t.Helper()
	testenv.RequireCgroup2(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), selfTestEnv+"="+mode)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func cgroupOf(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`CGROUP=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("subprocess printed no cgroup:\n%s", out)
	}
	return m[1]
}

func TestHelperFailsLeakyTest(t *testing.T) {
	out, err := runSelf(t, "leaky", "TestSelfLeaky")
	if err == nil {
		t.Fatalf("leaky test passed:\n%s", out)
	}
	m := regexp.MustCompile(`snakepittest: leaked process pid (\d+): sleep 3599`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "--- FAIL: TestSelfLeaky") {
		t.Fatalf("leak not named in the failure:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[1])
	// The helper killed the leak and removed the run.
	if st, err := os.ReadFile("/proc/" + m[1] + "/cmdline"); err == nil && strings.Contains(string(st), "3599") {
		t.Fatalf("leaked process %d still alive after the test ended", pid)
	}
	if _, err := os.Stat(cgroupOf(t, out)); err == nil {
		t.Fatalf("run cgroup left behind")
	}
}

func TestHelperPassesCleanTest(t *testing.T) {
	out, err := runSelf(t, "clean", "TestSelfClean")
	if err != nil || !strings.Contains(out, "--- PASS: TestSelfClean") {
		t.Fatalf("clean test failed (%v):\n%s", err, out)
	}
	if _, err := os.Stat(cgroupOf(t, out)); err == nil {
		t.Fatalf("run cgroup left behind")
	}
}

func TestCommandStartsInsideRun(t *testing.T) {
	r := snakepittest.New(t)
	out, err := r.Command("sh", "-c", `echo "$SNAKEPIT_RUN_ID"; cat /proc/self/cgroup`).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(out), "\n", 2)
	if lines[0] != r.ID() {
		t.Fatalf("SNAKEPIT_RUN_ID=%q, want %q", lines[0], r.ID())
	}
	p, err := cgroup.ParseProcCgroup([]byte(lines[1]))
	if err != nil || filepath.Base(p) != filepath.Base(r.CgroupPath()) {
		t.Fatalf("command ran in cgroup %q (%v), want the run's %s", p, err, r.CgroupPath())
	}
}

// recTB records a helper's failures instead of failing the real test.
type recTB struct {
	*testing.T
	errs []string
}

func (r *recTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCloseReportsAndKillsLeaks(t *testing.T) {
	rt := &recTB{T: t}
	r := snakepittest.New(rt)
	if err := r.Command("sh", "-c", "sleep 3596 >/dev/null 2>&1 & setsid sleep 3595 >/dev/null 2>&1 &").Run(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "sleep 3596")
	waitFor(t, r, "sleep 3595")
	leaks := r.Close()
	var cmds []string
	for _, l := range leaks {
		cmds = append(cmds, l.Cmdline)
		if err := unix.Kill(l.PID, 0); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", l.PID)); strings.Contains(string(b), "359") {
				t.Errorf("leak %v still alive after Close", l)
			}
		}
	}
	if len(leaks) != 2 || len(rt.errs) != 3 {
		t.Fatalf("leaks %v, errors %q", cmds, rt.errs)
	}
	if again := r.Close(); len(again) != 2 || len(rt.errs) != 3 {
		t.Fatalf("second Close: %v, errors %q", again, rt.errs)
	}
	if _, err := os.Stat(r.CgroupPath()); err == nil {
		t.Fatalf("run cgroup left behind")
	}
}

func Example() {
	t := &exampleT{} // a real test passes its *testing.T
	r := snakepittest.New(t)

	out, err := r.Command("sh", "-c", "echo hello from the run; sleep 300 >/dev/null 2>&1 &").Output()
	if err != nil {
		fmt.Println(err)
	}
	fmt.Print(string(out))

	// Close runs at cleanup anyway; calling it shows what it found.
	for _, leak := range r.Close() {
		fmt.Println("leaked:", leak.Cmdline)
	}
	t.cleanup()
	fmt.Println("test failed:", t.failed)
	// Output:
	// hello from the run
	// leaked: sleep 300
	// test failed: true
}

// exampleT stands in for *testing.T in the Example.
type exampleT struct {
	cleanups []func()
	failed   bool
}

func (e *exampleT) Helper()                   {}
func (e *exampleT) Cleanup(f func())          { e.cleanups = append(e.cleanups, f) }
func (e *exampleT) Errorf(string, ...any)     { e.failed = true }
func (e *exampleT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (e *exampleT) Skipf(f string, a ...any)  { panic(fmt.Sprintf(f, a...)) }
func (e *exampleT) Logf(string, ...any)       {}
func (e *exampleT) cleanup() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}
