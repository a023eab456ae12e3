//go:build linux

package jail_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// --net none: the worker sees only lo, which is up, and can use
// 127.0.0.1.
func TestNetNoneOnlyLoopback(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := newRunID(t)
	res := runCLI(t, helperEnvFor("ifaces"), "run", "--no-guardian", "--run-id", id, "--net", "none", "--", selfExe)
	if res.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	var ifaces []string
	for _, l := range lines(res.stdout) {
		if name, ok := strings.CutPrefix(l, "iface "); ok {
			ifaces = append(ifaces, name)
		}
	}
	if len(ifaces) != 1 || !strings.HasPrefix(ifaces[0], "lo ") || !strings.Contains(ifaces[0], "up") {
		t.Errorf("interfaces seen by the worker: %q, want only lo, up", ifaces)
	}
	if !strings.Contains(res.stdout, "loopback-ok 127.0.0.1:") {
		t.Errorf("worker could not use 127.0.0.1:\n%s", res.stdout)
	}
	// The host's view has more than lo (sanity: the test means something).
	host := runCLI(t, helperEnvFor("ifaces"), "run", "--no-guardian", "--", selfExe)
	if n := strings.Count(host.stdout, "iface "); n < 2 {
		t.Logf("note: the host network namespace has only %d interface(s)", n)
	}
}

// --net NAME joins /run/netns/NAME; bad and missing names fail clearly
// before anything runs.
func TestNetNamed(t *testing.T) {
	testenv.RequireCgroup2(t)
	name := "snakepit-test-" + runid.Generate()
	ino := makeNamedNetns(t, name)

	id := newRunID(t)
	res := runCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--net", name, "--", "readlink", "/proc/self/ns/net")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if want := fmt.Sprintf("net:[%d]", ino); strings.TrimSpace(res.stdout) != want {
		t.Errorf("worker's netns %q, want %q (/run/netns/%s)", strings.TrimSpace(res.stdout), want, name)
	}

	for _, c := range []struct {
		net, want string
		code      int
	}{
		{"../etc", "invalid network namespace", 2},
		{"a/b", "invalid network namespace", 2},
		{"snakepit-missing-" + runid.Generate(), "does not exist", 125},
	} {
		marker := filepath.Join(t.TempDir(), "ran")
		res := runCLI(t, nil, "run", "--no-guardian", "--net", c.net, "--", "touch", marker)
		// One line; a usage error (exit 2) adds "Try 'snakepit run --help'".
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		if c.code == 2 && len(lines) == 2 && lines[1] == "Try 'snakepit run --help'" {
			lines = lines[:1]
		}
		if res.code != c.code || !strings.Contains(res.stderr, c.want) || len(lines) != 1 {
			t.Errorf("--net %q: exit %d, stderr %q; want exit %d and one line with %q", c.net, res.code, res.stderr, c.code, c.want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("--net %q: the command ran", c.net)
		}
	}
}

// makeNamedNetns makes /run/netns/name (as "ip netns add" does) and returns
// its inode; it is removed when the test ends. The thread that unshares is
// never unlocked, so it ends with its goroutine.
func makeNamedNetns(t *testing.T, name string) uint64 {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		errc <- newNamedNetns(name)
	}()
	if err := <-errc; err != nil {
		t.Fatalf("make netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := deleteNamedNetns(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// newNamedNetns makes a new network namespace and binds it at
// /run/netns/name, as "ip netns add" does; the calling thread is left in
// it, so it must be a locked thread that is never unlocked.
func newNamedNetns(name string) error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	p := filepath.Join("/run/netns", name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		os.Remove(p)
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("/proc/thread-self/ns/net", p, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(p)
		return fmt.Errorf("bind %s: %w", p, err)
	}
	return nil
}

// deleteNamedNetns undoes newNamedNetns, as "ip netns delete" does.
func deleteNamedNetns(name string) error {
	p := filepath.Join("/run/netns", name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	return os.Remove(p)
}

// Workers forked before and after network namespace switches of the same
// spawner thread all die by Pdeathsig when their supervisor is SIGKILLed.
func TestNetnsPdeathsig(t *testing.T) {
	testenv.RequireCgroup2(t)
	cmd, sc, errb := startProc(t, selfExe, helperEnvFor("supervisor"), nil)
	var got struct {
		Pids []int    `json:"pids"`
		Runs []string `json:"runs"`
	}
	line := readLineTimeout(t, sc, 30*time.Second)
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("supervisor said %q (%v); stderr: %s", line, err, errb)
	}
	for _, id := range got.Runs {
		id := id
		// Nothing tears these runs down but us: they are expected to
		// remain after the SIGKILL (that is what the guardian and gc are
		// for), so their presence is no leak.
		t.Cleanup(func() { cleanupRun(t, id, false) })
	}
	fds := make([]int, len(got.Pids))
	for i, pid := range got.Pids {
		fds[i] = pidfd(t, pid)
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for i, fd := range fds {
		if !reaper.PidfdExited(fd, 10*time.Second) {
			t.Errorf("worker %d (PID %d) survived its supervisor's SIGKILL", i+1, got.Pids[i])
		}
	}
}

// The same through the CLI: snakepit run --net none, wrapper SIGKILLed
// (no guardian), the worker dies by Pdeathsig.
func TestNetNoneCLIPdeathsig(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	t.Cleanup(func() { cleanupRun(t, id, false) }) // expected to remain: no guardian
	cmd, sc, _ := startCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--net", "none", "--",
		"sh", "-c", `echo $$; exec sleep 1000`)
	var pid int
	if _, err := fmt.Sscan(readLineTimeout(t, sc, 30*time.Second), &pid); err != nil {
		t.Fatal(err)
	}
	fd := pidfd(t, pid)
	_ = cmd.Process.Signal(unix.SIGKILL)
	if !reaper.PidfdExited(fd, 10*time.Second) {
		t.Errorf("worker %d survived the SIGKILLed wrapper", pid)
	}
}
