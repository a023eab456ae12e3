//go:build linux

package pidns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
)

// The test binary doubles as the init (argv[1] == "__init") and as a tiny
// unprivileged supervisor ("__wraprun"), so no snakepit binary is needed.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case Subcommand:
			os.Exit(Main(os.Args[2:]))
		case "__wraprun":
			os.Exit(wrapRun(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

// wrapRun runs argv through Wrap (with a user namespace when not root) and
// exits with its status: the non-root path, exercised under setpriv-like
// credentials by TestUserNS.
func wrapRun(argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	Wrap(cmd, Options{InitPath: SelfExe, UserNS: UserNSNeeded(), Grace: time.Second})
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wraprun:", err)
		return 125
	}
	return 0
}

// startWrapped starts argv through the init with the test binary as init
// and registers cleanup: the init is SIGKILLed (which ends its namespace)
// and waited for.
func startWrapped(t *testing.T, o Options, argv ...string) (*exec.Cmd, *bytes.Buffer, int) {
	t.Helper()
	testenv.RequireRoot(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if o.InitPath == "" {
		o.InitPath = SelfExe
	}
	Wrap(cmd, o)
	pidfd := -1
	cmd.SysProcAttr.PidFD = &pidfd
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		_ = cmd.Wait()
		unix.Close(pidfd)
	})
	return cmd, &out, pidfd
}

func waitStatus(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatalf("init did not exit")
		return -1
	}
}

func TestNamespaceAndProc(t *testing.T) {
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	cmd, out, _ := startWrapped(t, Options{},
		"/bin/sh", "-c", `echo "pid=$$ self=$(readlink /proc/self) n=$(ls -d /proc/[0-9]* | wc -l)"`)
	if st := waitStatus(t, cmd); st != 0 {
		t.Fatalf("status %d, output %q", st, out)
	}
	got := strings.TrimSpace(out.String())
	// sh has a small PID of the namespace (the init is 1; its Go runtime
	// threads take the next few); /proc shows the namespace only: init, sh,
	// the ls, and the $(readlink) subshell at most.
	var pid, self, n int
	if _, err := fmt.Sscanf(got, "pid=%d self=%d n=%d", &pid, &self, &n); err != nil || pid > 64 {
		t.Fatalf("want the command to have a small PID of a new namespace, got %q", got)
	}
	if n < 2 || n > 5 {
		t.Fatalf("/proc inside shows %d processes (want 2..5): %q", n, got)
	}
	after, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("host mount table changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -TERM $$", 128 + 15},
		{"kill -KILL $$", 128 + 9},
	} {
		cmd, out, _ := startWrapped(t, Options{}, "/bin/sh", "-c", tc.script)
		if st := waitStatus(t, cmd); st != tc.want {
			t.Errorf("%q: status %d, want %d (output %q)", tc.script, st, tc.want, out)
		}
	}
	cmd, out, _ := startWrapped(t, Options{}, "/nonexistent/program")
	if st := waitStatus(t, cmd); st != 127 {
		t.Errorf("missing program: status %d, want 127 (output %q)", st, out)
	}
}

func TestForwardsSignals(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", `trap 'exit 42' USR1; echo ready >&3; while :; do sleep 0.01; done`)
	cmd.ExtraFiles = []*os.File{w}
	Wrap(cmd, Options{InitPath: SelfExe})
	pidfd := -1
	cmd.SysProcAttr.PidFD = &pidfd
	testenv.RequireRoot(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { _ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); unix.Close(pidfd) })
	buf := make([]byte, 6)
	if _, err := r.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("no readiness through the passed fd 3: %q %v", buf, err)
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGUSR1, nil, 0); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, cmd); st != 42 {
		t.Fatalf("status %d, want 42 (the trap's)", st)
	}
}

// descendants lists the PIDs (host view) below pid, by ppid.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	}
	var out []int
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[p] {
			out = append(out, c)
			stack = append(stack, c)
		}
	}
	return out
}

func openAll(t *testing.T, pids []int) []int {
	var fds []int
	for _, p := range pids {
		if fd, err := unix.PidfdOpen(p, 0); err == nil {
			fds = append(fds, fd)
		}
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds
}

func waitAllExited(t *testing.T, fds []int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, fd := range fds {
		if !reaper.PidfdExited(fd, time.Until(deadline)) {
			t.Fatalf("a process of the namespace is still alive after %v", d)
		}
	}
}

// A setsid'd, double-forked daemon that ignores SIGTERM still dies with the
// init: first when the command exits (SIGTERM, grace, then the kernel's
// SIGKILL), and below when the init itself is SIGKILLed.
func TestCommandExitEndsNamespace(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	script := `setsid sh -c 'trap "" TERM; sleep 1000 & sleep 1000 & wait' & sleep 1000 & ` +
		`while [ $(ls -d /proc/[0-9]* | wc -l) -lt 7 ]; do sleep 0.01; done; touch ` + ready + `; read x; exit 0`
	cmd := exec.Command("/bin/sh", "-c", script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	Wrap(cmd, Options{InitPath: SelfExe, Grace: 100 * time.Millisecond})
	testenv.RequireRoot(t)
	pidfd := -1
	cmd.SysProcAttr.PidFD = &pidfd
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); unix.Close(pidfd) })
	waitFile(t, ready)
	fds := openAll(t, descendants(cmd.Process.Pid))
	if len(fds) < 5 {
		t.Fatalf("only %d descendants", len(fds))
	}
	start := time.Now()
	stdin.Close()
	if st := waitStatus(t, cmd); st != 0 {
		t.Fatalf("status %d", st)
	}
	waitAllExited(t, fds, time.Second)
	t.Logf("command exit -> namespace empty in %v (grace 100ms, a SIGTERM-ignorer inside)", time.Since(start))
}

func TestKilledInitEndsNamespace(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	script := `setsid sh -c 'trap "" TERM; sleep 1000 & sleep 1000 & wait' & sleep 1000 & ` +
		`while [ $(ls -d /proc/[0-9]* | wc -l) -lt 7 ]; do sleep 0.01; done; touch ` + ready + `; wait`
	cmd, _, pidfd := startWrapped(t, Options{Grace: time.Hour}, "/bin/sh", "-c", script)
	waitFile(t, ready)
	fds := openAll(t, descendants(cmd.Process.Pid))
	start := time.Now()
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatal(err)
	}
	waitAllExited(t, fds, time.Second)
	t.Logf("SIGKILL of the init -> %d processes gone in %v", len(fds), time.Since(start))
}

func waitFile(t *testing.T, p string) {
	t.Helper()
	// The file is made by a shell in another namespace.
	testenv.Eventually(t, 10*time.Second, p+" appears", func() bool {
		_, err := os.Stat(p)
		return err == nil
	})
}

// TestUserNS runs the wrap as an unprivileged user: CLONE_NEWUSER with the
// uid mapped to itself; the command must see its own uid (not root), be PID
// 2 and see a namespace-only /proc.
func TestUserNS(t *testing.T) {
	testenv.RequireRoot(t)
	dir, err := os.MkdirTemp("", "pidns-userns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pidns.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "__wraprun", "/bin/sh", "-c",
		`echo "uid=$(id -u) pid=$$ n=$(ls -d /proc/[0-9]* | wc -l) caps=$(grep CapEff /proc/self/status | cut -f2)"`)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("wraprun as nobody: %v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	var uid, pid, n int
	var caps string
	if _, err := fmt.Sscanf(got, "uid=%d pid=%d n=%d caps=%s", &uid, &pid, &n, &caps); err != nil ||
		uid != 65534 || pid > 64 || n > 5 || caps != "0000000000000000" {
		t.Fatalf("want uid=65534, a small PID, a namespace-only /proc, no capabilities; got %q", got)
	}
}

// A Credential on the wrapped command applies to the command, not to the
// init, which still mounts /proc.
func TestCredentialMovesToCommand(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $(ls -d /proc/[0-9]* | wc -l)"`)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534, 100}}}
	Wrap(cmd, Options{InitPath: SelfExe})
	testenv.RequireRoot(t)
	if cmd.SysProcAttr.Credential != nil {
		t.Fatal("the init would run with the command's credential")
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	var uid, gid, g1, g2, n int
	if _, err := fmt.Sscan(out.String(), &uid, &gid, &g1, &g2, &n); err != nil || uid != 65534 || gid != 65534 || g2 != 100 || n > 6 {
		t.Fatalf("want uid/gid 65534, groups 65534 100 and a namespace-only /proc; got %q", out.String())
	}
}

// The directory goes with the credential: the command enters it as its
// user, and one its user may not enter is refused (126), as without a
// namespace. Entered by the init, as root, it was not.
func TestDirEnteredWithCredential(t *testing.T) {
	testenv.RequireRoot(t)
	private := filepath.Join(t.TempDir(), "private")
	if err := os.MkdirAll(filepath.Join(private, "pub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(dir string) (string, error) {
		cmd := exec.Command("/bin/pwd")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		Wrap(cmd, Options{InitPath: SelfExe})
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	out, err := run(filepath.Join(private, "pub"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 126 {
		t.Fatalf("a directory the user may not enter: %v, %q; want exit 126", err, out)
	}
	if out, err := run("/tmp"); err != nil || out != "/tmp" {
		t.Fatalf("an open directory: %v, %q", err, out)
	}
}
