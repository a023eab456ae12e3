package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/client"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// binary is the snakepit executable built by TestMain.
var binary string

// helperEnv switches the test binary into the unprivileged client helper.
const helperEnv = "SNAKEPIT_DAEMON_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	dir, err := os.MkdirTemp("", "snakepit-daemon-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-searchable: the guardian and unprivileged workers exec from here.
	_ = os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "snakepit")
	// The full build (snakepitd): the default build leaves the daemon out.
	build := exec.Command("go", "build", "-tags", "snakepitd", "-o", binary, "github.com/snakepit/snakepit/cmd/snakepit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building snakepit:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// helperReq is one request the helper makes.
type helperReq struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Body   string `json:"body,omitempty"`
}

// helperRes is its outcome: a status and body, or a connect error.
type helperRes struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
	Err    string `json:"err,omitempty"`
}

// runHelper drops to the credentials in its environment, then makes the
// requests and prints their results as JSON. It is how tests talk to the
// daemon as another user: SO_PEERCRED records the connecting process's
// credentials.
func runHelper() int {
	atoi := func(k string) int { n, _ := strconv.Atoi(os.Getenv(k)); return n }
	var groups []int
	for _, g := range strings.Split(os.Getenv("SP_GROUPS"), ",") {
		if n, err := strconv.Atoi(g); err == nil {
			groups = append(groups, n)
		}
	}
	// Go's Setgroups/Setgid/Setuid act on every thread of the process.
	if err := syscall.Setgroups(groups); err != nil {
		fmt.Fprintln(os.Stderr, "setgroups:", err)
		return 2
	}
	if err := syscall.Setgid(atoi("SP_GID")); err != nil {
		fmt.Fprintln(os.Stderr, "setgid:", err)
		return 2
	}
	if err := syscall.Setuid(atoi("SP_UID")); err != nil {
		fmt.Fprintln(os.Stderr, "setuid:", err)
		return 2
	}
	var reqs []helperReq
	if err := json.Unmarshal([]byte(os.Getenv("SP_REQS")), &reqs); err != nil {
		fmt.Fprintln(os.Stderr, "SP_REQS:", err)
		return 2
	}
	sock := os.Getenv("SP_SOCKET")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	var out []helperRes
	for _, r := range reqs {
		var body io.Reader
		if r.Body != "" {
			body = strings.NewReader(r.Body)
		}
		req, _ := http.NewRequest(r.Method, "http://snakepit"+r.Path, body)
		resp, err := hc.Do(req)
		if err != nil {
			out = append(out, helperRes{Err: err.Error()})
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, helperRes{Status: resp.StatusCode, Body: string(b)})
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	return 0
}

// asUser makes reqs as uid/gid/groups through the helper.
func asUser(t *testing.T, socket string, uid, gid int, groups []int, reqs ...helperReq) []helperRes {
	t.Helper()
	gs := make([]string, len(groups))
	for i, g := range groups {
		gs[i] = strconv.Itoa(g)
	}
	rj, _ := json.Marshal(reqs)
	cmd := testenv.HelperProcess("", helperEnv+"=1", "SP_SOCKET="+socket,
		"SP_UID="+strconv.Itoa(uid), "SP_GID="+strconv.Itoa(gid), "SP_GROUPS="+strings.Join(gs, ","),
		"SP_REQS="+string(rj))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, stderr.String())
	}
	var res []helperRes
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	if len(res) != len(reqs) {
		t.Fatalf("helper: %d results for %d requests", len(res), len(reqs))
	}
	return res
}

// daemonProc is a snakepit daemon started by a test.
type daemonProc struct {
	t           testing.TB
	cmd         *exec.Cmd
	socket      string
	parent      string
	dir         string
	notify      *net.UnixConn
	nmu         sync.Mutex
	nkick       chan struct{}
	statusLines []string // STATUS= lines received
	msgs        []string // every sd_notify datagram received
	log         *bytes.Buffer
	exited      chan struct{}
	err         error
	c           *client.Client
}

type daemonOpts struct {
	args   []string
	parent string     // reuse a parent (restart); empty makes a fresh one
	dir    string     // reuse a socket dir
	files  []*os.File // inherited by the daemon as fds 3, 4, ...
	// discardLog sends the daemon's log to /dev/null instead of a pipe
	// that the test reads: benchmarks that separate the cost of logging
	// (a wakeup of the reader per line) from the rest.
	discardLog bool
}

// startDaemon starts `snakepit daemon` with a private socket and cgroup
// parent and waits for READY=1 on a NOTIFY_SOCKET of our own. Cleanup
// stops it (SIGTERM), checks it exited 0 and removes what it left.
func startDaemon(t testing.TB, o daemonOpts) *daemonProc {
	t.Helper()
	m := testenv.RequireCgroup2(t)
	dir := o.dir
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "snakepit-daemon-test-")
		if err != nil {
			t.Fatal(err)
		}
		// Other UIDs must reach the socket inside.
		_ = os.Chmod(dir, 0o755)
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	parent := o.parent
	if parent == "" {
		parent = filepath.Join(m.Path, "sptest-daemon-"+runid.Generate())
		t.Cleanup(func() { removeParent(t, parent) })
	}
	d := &daemonProc{t: t, socket: filepath.Join(dir, "sock"), parent: parent, dir: dir, log: &bytes.Buffer{}, exited: make(chan struct{}), nkick: make(chan struct{}, 1)}
	nsPath := filepath.Join(dir, fmt.Sprintf("notify-%d", time.Now().UnixNano()))
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d.notify = ns
	go d.readNotify()
	args := append([]string{"daemon", "--socket", d.socket, "--cgroup-parent", parent, "--grace", "1s", "--debug"}, o.args...)
	d.cmd = exec.Command(binary, args...)
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+nsPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if o.discardLog {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { null.Close() })
		d.cmd.Stdout, d.cmd.Stderr = null, null
	}
	d.cmd.ExtraFiles = o.files
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop(true)
		ns.Close()
		os.Remove(nsPath)
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	if !d.waitNotify("READY=1", 30*time.Second) {
		t.Fatalf("daemon did not become ready; log:\n%s", d.log.String())
	}
	d.c = client.New(d.socket)
	t.Cleanup(d.c.Close)
	return d
}

// readNotify collects every sd_notify datagram until the socket closes,
// so that the daemon's sends never block on a full queue.
func (d *daemonProc) readNotify() {
	buf := make([]byte, 4096)
	for {
		n, err := d.notify.Read(buf)
		if err != nil {
			return
		}
		msg := string(buf[:n])
		d.nmu.Lock()
		d.msgs = append(d.msgs, msg)
		for _, l := range strings.Split(msg, "\n") {
			if s, ok := strings.CutPrefix(l, "STATUS="); ok {
				d.statusLines = append(d.statusLines, s)
			}
		}
		d.nmu.Unlock()
		select {
		case d.nkick <- struct{}{}:
		default:
		}
	}
}

// notified reports whether a datagram containing want has arrived.
func (d *daemonProc) notified(want string) bool {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	for _, m := range d.msgs {
		if strings.Contains(m, want) {
			return true
		}
	}
	return false
}

// statusSeen reports whether a STATUS= line containing want has arrived.
func (d *daemonProc) statusSeen(want string) bool {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	for _, m := range d.statusLines {
		if strings.Contains(m, want) {
			return true
		}
	}
	return false
}

// waitNotify waits until a datagram containing want arrives, the daemon
// exits, or timeout.
func (d *daemonProc) waitNotify(want string, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	exited := d.exited
	for !d.notified(want) {
		select {
		case <-d.nkick:
		case <-exited:
			// What it sent before exiting is still queued: give the reader
			// a moment, then give up.
			exited = nil
			t.Reset(time.Second)
		case <-t.C:
			return false
		}
	}
	return true
}

// stop sends SIGTERM and waits; wantClean checks exit status 0.
func (d *daemonProc) stop(wantClean bool) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("daemon did not exit within 30s of SIGTERM")
		return
	}
	if wantClean && d.err != nil {
		d.t.Errorf("daemon exit: %v; log:\n%s", d.err, d.log.String())
	}
}

// kill SIGKILLs the daemon and waits for it.
func (d *daemonProc) kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

func (d *daemonProc) status(t testing.TB) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := d.c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// removeParent tears down whatever is left under a test parent (failing
// the test if anything was) and removes it.
func removeParent(t testing.TB, parent string) {
	t.Helper()
	if _, err := os.Stat(parent); errors.Is(err, os.ErrNotExist) {
		return
	}
	g, err := cgroup.Open(parent)
	if err == nil {
		if pids, _ := g.ProcsRecursive(); len(pids) > 0 {
			t.Errorf("processes left under %s: %v", parent, pids)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = g.Kill(ctx)
			_ = g.WaitEmpty(ctx)
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = g.Remove(ctx)
		cancel()
	}
}

// runCgroups lists snakepit-* directories under parent.
func runCgroups(parent string) []string {
	ents, _ := os.ReadDir(parent)
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), cgroup.Prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitGone waits (pidfd) until pid has exited, up to timeout.
func waitGone(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	return reaper.PidfdExited(fd, timeout)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// raw makes a request with the plain HTTP client of c's socket and returns
// status and body.
func raw(t *testing.T, socket, method, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://snakepit"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// execOutput runs a command and returns its combined output.
func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
