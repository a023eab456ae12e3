//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// binPath is the snakepit binary built once for these tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snakepit-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "snakepit")
	// Our own guardian service (beside our own records), which exits soon
	// after the last run it guards: a test that checks "the guardian is
	// gone" waits for that.
	os.Setenv(record.DirEnv, filepath.Join(dir, "runs"))
	os.Setenv(guardian.IdleEnv, "100ms")
	os.Setenv(guardian.BinaryEnv, binPath) // run() called in-process: the test binary is not snakepit
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cleanupRun makes sure run id is gone when the test ends, even if the code
// under test failed to remove it; a leftover fails the test.
func cleanupRun(t *testing.T, id string) {
	t.Cleanup(func() {
		if removeRun(id) {
			t.Errorf("run %s was left behind", id)
		}
	})
}

// removeRun tears run id down if it still exists and reports whether it did.
func removeRun(id string) bool {
	g, err := inventory.Lookup(id)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	containment.TeardownGroup(ctx, g, 0)
	return true
}

func snakepitCmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(binPath, args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func exitStatus(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("run: %v", err)
	}
	return ee.ExitCode()
}

func TestRunExitStatuses(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -9 $$", 128 + 9},
	} {
		id := runid.Generate()
		cleanupRun(t, id)
		cmd := snakepitCmd(t, "run", "--run-id", id, "--", "sh", "-c", tc.script)
		if got := exitStatus(t, cmd.Run()); got != tc.want {
			t.Errorf("%q: exit status %d, want %d", tc.script, got, tc.want)
		}
	}
}

// TestRunLeavesNothing is the headline example: a background
// sleeper and a setsid'd double-fork; the wrapper exits with 0 after ~1 s
// and no process of the run and no cgroup remain.
func TestRunLeavesNothing(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cleanupRun(t, id)
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	// The script reports the PIDs it started on fd 3 so we can hold pidfds
	// on them before the wrapper tears them down.
	script := `sleep 300 3>&- & echo $! >&3; setsid sh -c 'sleep 300 3>&- & echo $! >&3' ; exec 3>&-; sleep 1`
	cmd := snakepitCmd(t, "run", "--run-id", id, "--", "sh", "-c", script)
	cmd.ExtraFiles = []*os.File{readyW}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	var pidfds []int
	buf := make([]byte, 256)
	var got string
	// Not until EOF: the wrapper itself holds the pipe's write end.
	for strings.Count(got, "\n") < 2 {
		n, err := readyR.Read(buf)
		got += string(buf[:n])
		if err != nil {
			break
		}
	}
	for _, f := range strings.Fields(got) {
		var pid int
		fmt.Sscan(f, &pid)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open(%d): %v (read %q)", pid, err, got)
		}
		defer unix.Close(fd)
		pidfds = append(pidfds, fd)
		t.Cleanup(func() { unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) })
	}
	if len(pidfds) != 2 {
		t.Fatalf("want 2 sleeper PIDs, got %q", got)
	}
	if code := exitStatus(t, cmd.Wait()); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	elapsed := time.Since(start)
	for _, fd := range pidfds {
		if !reaper.PidfdExited(fd, 0) {
			t.Errorf("a sleeper survived the wrapper")
		}
	}
	if _, err := inventory.Lookup(id); !errors.Is(err, snakepit.ErrUnknownRun) {
		t.Errorf("run cgroup still there: %v", err)
	}
	t.Logf("wrapper exited after %v", elapsed)
}

func TestRunForwardsSIGTERM(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cleanupRun(t, id)
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd := snakepitCmd(t, "run", "--run-id", id, "--", "sh", "-c", `trap 'exit 42' TERM; echo ready >&3; exec 3>&-; while :; do sleep 0.05; done`)
	cmd.ExtraFiles = []*os.File{readyW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	buf := make([]byte, 16)
	if _, err := readyR.Read(buf); err != nil {
		t.Fatalf("child never got ready: %v", err)
	}
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, cmd.Wait()); code != 42 {
		t.Fatalf("exit status %d, want 42 (the child's SIGTERM trap)", code)
	}
}

// TestWrapperSIGKILLKillsChild: Pdeathsig from the spawner thread reaches
// the direct child when the wrapper dies without running any cleanup.
func TestWrapperSIGKILLKillsChild(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	// Removing the run of a SIGKILLed wrapper is the guardian's job, tested
	// elsewhere; here only the direct child matters.
	t.Cleanup(func() { removeRun(id) })
	readyR, readyW, _ := os.Pipe()
	defer readyR.Close()
	cmd := snakepitCmd(t, "run", "--run-id", id, "--", "sh", "-c", `echo $$ >&3; exec 3>&-; exec sleep 300`)
	cmd.ExtraFiles = []*os.File{readyW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	buf := make([]byte, 32)
	n, err := readyR.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(buf[:n]), &pid)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	t.Cleanup(func() { unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if !reaper.PidfdExited(fd, 10*time.Second) {
		t.Fatalf("child %d still alive 10 s after the wrapper was SIGKILLed", pid)
	}
}

func TestRunBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"run", "--run-id", "../etc", "--", "true"}, exitInvalidID},
		{[]string{"run", "--run-id", "ABCDEFG", "--", "true"}, exitInvalidID},
		{[]string{"run", "--run-id", "abc123", "--", "true"}, exitInvalidID},
		{[]string{"run", "--run-id", "abc12345", "--", "true"}, exitInvalidID},
		{[]string{"run", "--run-id", "äbc1234", "--", "true"}, exitInvalidID},
		{[]string{"run"}, exitUsage},
		{[]string{"nosuchcommand"}, exitUsage},
	} {
		cmd := snakepitCmd(t, tc.args...)
		out, err := cmd.CombinedOutput()
		if got := exitStatus(t, err); got != tc.want {
			t.Errorf("%q: status %d, want %d (%s)", tc.args, got, tc.want, out)
		}
		if lines := strings.Count(strings.TrimSpace(string(out)), "\n"); tc.want == exitInvalidID && lines != 0 {
			t.Errorf("%q: want one line on stderr, got %q", tc.args, out)
		}
	}
}

func TestRunIDInUse(t *testing.T) {
	testenv.RequireCgroup2(t)
	ctx := context.Background()
	r, err := snakepit.Create(ctx, snakepit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Teardown(context.Background(), 0) })
	out, err := snakepitCmd(t, "run", "--run-id", r.ID(), "--", "true").CombinedOutput()
	if got := exitStatus(t, err); got != exitIDInUse {
		t.Fatalf("status %d, want %d (%s)", got, exitIDInUse, out)
	}
}

func TestRunCommandNotFound(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cleanupRun(t, id)
	out, err := snakepitCmd(t, "run", "--run-id", id, "--", "/nonexistent/prog").CombinedOutput()
	if got := exitStatus(t, err); got != exitNotFound {
		t.Fatalf("status %d, want %d (%s)", got, exitNotFound, out)
	}
}

// ENOENT from snakepit's own files is not "command not found": 127 and
// 126 are only for starting the user's command.
func TestOwnENOENTIsNot127(t *testing.T) {
	testenv.RequireCgroup2(t)
	cmd := snakepitCmd(t, "run", "--mode", "posix", "--", "true")
	cmd.Env = append(os.Environ(), "SNAKEPIT_RECORDS_DIR=/proc/nonexistent/x")
	out, err := cmd.CombinedOutput()
	if got := exitStatus(t, err); got != exitFailure {
		t.Fatalf("status %d, want %d (%s)", got, exitFailure, out)
	}
}

// A --cgroup-parent outside cgroup2 is a bad argument, refused before
// anything is made there.
func TestCgroupParentOutsideCgroup2(t *testing.T) {
	testenv.RequireCgroup2(t)
	parent := filepath.Join(t.TempDir(), "not-a-cgroup")
	for _, args := range [][]string{
		{"create", "--no-guardian", "--cgroup-parent", parent},
		{"run", "--no-guardian", "--cgroup-parent", parent, "--", "true"},
		{"run", "--no-guardian", "--cgroup-parent", "relative/dir", "--", "true"},
	} {
		out, err := snakepitCmd(t, args...).CombinedOutput()
		if got := exitStatus(t, err); got != exitUsage {
			t.Errorf("%v: status %d, want %d (%s)", args, got, exitUsage, out)
		}
	}
	if _, err := os.Stat(parent); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s was made: %v", parent, err)
	}
}

func TestRunExitWithStdin(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cleanupRun(t, id)
	cmd := snakepitCmd(t, "run", "--grace", "2s", "--exit-with-stdin", "--run-id", id, "--", "sh", "-c", "setsid sleep 300 & cat; sleep 300")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &strings.Builder{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "hello through the wrapper")
	stdin.Close()
	code := exitStatus(t, cmd.Wait())
	if code != 128+int(unix.SIGTERM) {
		t.Errorf("status %d, want %d (child terminated at stdin EOF)", code, 128+int(unix.SIGTERM))
	}
	if !strings.Contains(out.String(), "hello through the wrapper") {
		t.Errorf("stdin not passed through: %q", out.String())
	}
}
