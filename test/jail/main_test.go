//go:build linux

// Package jail_test tests the jail settings of snakepit runs (issue 5):
// limits and their events, network namespaces, privilege drop and
// readiness, through the snakepit binary and the Go library. Tests that
// need the memory, pids or cpu controller skip on hosts without them and
// run in test/vm-rig, which builds this package as a static test binary.
package jail_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// helperEnv selects a helper mode of this test binary, used as a worker.
const helperEnv = "SNAKEPIT_JAIL_HELPER"

// binEnv names a prebuilt snakepit binary (the VM rig has no Go
// toolchain); otherwise TestMain builds one.
const binEnv = "SNAKEPIT_BIN"

var (
	snakepitBin  string
	snakepitdBin string // the full build, with the daemon
	selfExe      string
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	var err error
	if selfExe, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, "os.Executable:", err)
		os.Exit(1)
	}
	var tmp string
	if b := os.Getenv(binEnv); b != "" {
		snakepitBin = b
		snakepitdBin = filepath.Join(filepath.Dir(b), "snakepitd") // beside it, as test/setup.sh builds them
	} else {
		tmp, err = os.MkdirTemp("", "snakepit-jailtest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		snakepitBin = filepath.Join(tmp, "snakepit")
		snakepitdBin = filepath.Join(tmp, "snakepitd")
		for bin, tags := range map[string]string{snakepitBin: "", snakepitdBin: "snakepitd"} {
			out, err := exec.Command("go", "build", "-tags", tags, "-o", bin, "github.com/snakepit/snakepit/cmd/snakepit").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "building snakepit (or set %s): %v\n%s", binEnv, err, out)
				os.RemoveAll(tmp)
				os.Exit(1)
			}
		}
	}
	// The library's Create registers each run with the guardian service,
	// started from this binary when none runs (helpers inherit it too).
	os.Setenv(binEnv, snakepitBin)
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// runHelper is this binary acting as a worker.
// allocMiB allocates n MiB and touches every page of it.
func allocMiB(n int) [][]byte {
	var chunks [][]byte
	for range n {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		chunks = append(chunks, b)
	}
	return chunks
}

func runHelper(mode string) int {
	switch mode {
	case "hog": // allocate and touch memory until killed
		fmt.Println("hog: allocated", len(allocMiB(4096)), "MiB without being killed")
		return 3
	case "alloc200": // allocate and touch 200 MiB, then say so
		fmt.Println("alloc200: allocated", len(allocMiB(200)), "MiB without being killed")
		return 0
	case "ifaces": // list interfaces of our netns, prove loopback works
		ifs, err := net.Interfaces()
		if err != nil {
			fmt.Println("interfaces:", err)
			return 1
		}
		for _, i := range ifs {
			fmt.Printf("iface %s %s\n", i.Name, i.Flags)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				_, _ = io.Copy(c, c)
				c.Close()
			}
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		_, _ = c.Write([]byte("x"))
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			fmt.Println("echo:", err)
			return 1
		}
		fmt.Println("loopback-ok", l.Addr())
		return 0
	case "notify": // sd_notify: STATUS, then READY=1, then run until killed
		addr := &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"}
		c, err := net.DialUnix("unixgram", nil, addr)
		if err != nil {
			fmt.Println("notify:", err)
			return 1
		}
		_, _ = c.Write([]byte("STATUS=starting"))
		_, _ = c.Write([]byte("READY=1\nSTATUS=serving on nothing"))
		c.Close()
		fmt.Println("notified")
		for { // until killed; a timer keeps a static binary's deadlock check quiet
			time.Sleep(time.Hour)
		}
	case "supervisor":
		return supervisorHelper()
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// helperCmd returns argv and env running this binary in a helper mode.
func helperEnvFor(mode string) []string {
	return append(os.Environ(), helperEnv+"="+mode)
}

type cliResult struct {
	code           int
	stdout, stderr string
	dur            time.Duration
}

// runCLI runs the snakepit binary to completion (bounded by 120 s).
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, snakepitBin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String(), dur: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("snakepit %v: %v\nstderr: %s", args, err, errb.String())
	}
	return res
}

// newRunID returns a fresh run ID whose cgroup, if it is left behind, is
// torn down when the test ends and counted as a leak.
func newRunID(t *testing.T) string {
	t.Helper()
	id := runid.Generate()
	t.Cleanup(func() { cleanupRun(t, id, true) })
	return id
}

// cleanupRun tears down run id's cgroup if it still exists; leak says
// whether its existence is an error.
func cleanupRun(t *testing.T, id string, leak bool) {
	t.Helper()
	g, err := inventory.Lookup(id)
	if err != nil {
		return
	}
	if leak {
		t.Errorf("run %s left its cgroup %s behind", id, g.Path())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := containment.TeardownGroup(ctx, g, 0); err != nil {
		t.Errorf("cleanup of run %s: %v", id, err)
	}
}

// pidfd opens a pidfd on pid, closed when the test ends.
func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() {
		// Never leave a process behind, whatever the test did.
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return fd
}

// pidfdIfAlive is pidfd for a process that may already have exited.
func pidfdIfAlive(t *testing.T, pid int) (int, bool) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, false
	}
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return fd, true
}

// startCLI starts the snakepit binary and returns it running, with its
// stdout as a line scanner. extra becomes fds 3, 4, ...
func startCLI(t *testing.T, extra []*os.File, args ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	return startProc(t, snakepitBin, nil, extra, args...)
}

// startProc starts path (env nil: ours) and makes sure it is gone when the
// test ends.
func startProc(t *testing.T, path string, env []string, extra []*os.File, args ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	testenv.RequireCgroup2(t)
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.ExtraFiles = extra
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd := pidfd(t, cmd.Process.Pid)
	t.Cleanup(func() {
		if !reaper.PidfdExited(fd, 0) {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(out), &errb
}

// waitStatus waits for a started snakepit to exit and returns its status.
func waitStatus(t *testing.T, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("snakepit did not exit within %v", d)
	}
	return -1
}

// supervisorHelper creates runs with the library and starts workers from
// the same spawner before and after network namespace switches, prints
// their PIDs and run IDs as JSON, and waits to be SIGKILLed.
func supervisorHelper() int {
	ctx := context.Background()
	host, err := snakepit.Create(ctx, snakepit.Options{})
	if err != nil {
		fmt.Println("create:", err)
		return 1
	}
	none, err := snakepit.Create(ctx, snakepit.Options{Net: snakepit.Net{Mode: snakepit.NetNone}})
	if err != nil {
		fmt.Println("create:", err)
		return 1
	}
	var pids []int
	start := func(r *snakepit.Run, newPrivs bool) bool {
		w, err := r.Start(ctx, snakepit.Command{
			Args:       []string{"sleep", "1000"},
			Credential: snakepit.Credential{NewPrivileges: newPrivs},
		})
		if err != nil {
			fmt.Println("start:", err)
			return false
		}
		pids = append(pids, w.PID())
		return true
	}
	// no_new_privs workers (the default) come from the spawner's nnp
	// companion thread, the others from its main thread: both switch
	// namespaces and back between host workers.
	for _, s := range []struct {
		r  *snakepit.Run
		np bool
	}{{host, false}, {none, false}, {host, false}, {none, true}, {host, true}, {none, false}} {
		if !start(s.r, s.np) {
			return 1
		}
	}
	out, _ := json.Marshal(map[string]any{"pids": pids, "runs": []string{host.ID(), none.ID()}})
	fmt.Println(string(out))
	for { // until SIGKILLed
		time.Sleep(time.Hour)
	}
}

// readLineTimeout reads one line from sc, failing the test after d.
func readLineTimeout(t *testing.T, sc *bufio.Scanner, d time.Duration) string {
	t.Helper()
	c := make(chan string, 1)
	go func() {
		if sc.Scan() {
			c <- sc.Text()
		}
		close(c)
	}()
	select {
	case l, ok := <-c:
		if !ok {
			t.Fatalf("output ended (%v)", sc.Err())
		}
		return l
	case <-time.After(d):
		t.Fatalf("no output line within %v", d)
	}
	return ""
}

// lines splits s into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
