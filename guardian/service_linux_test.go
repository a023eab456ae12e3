//go:build linux

package guardian

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// A registration names one run cgroup by its ID; anything else is refused
// and the descriptors that came with it are closed.
func TestParseRegRefuses(t *testing.T) {
	id := runid.Generate()
	path := "/sys/fs/cgroup/parent/" + cgroup.Prefix + id
	for _, tc := range []struct{ name, body string }{
		{"no ID", "\x00\x00k"},
		{"bad ID", "../../x\x00\x00k"},
		{"path of another run", id + "\x00/sys/fs/cgroup/" + cgroup.Prefix + runid.Generate() + "\x00k"},
		{"path not a run cgroup", id + "\x00/home/u\x00k"},
		{"relative path", id + "\x00parent/" + cgroup.Prefix + id + "\x00k"},
		{"unclean path", id + "\x00/sys/fs/cgroup/../../home/" + cgroup.Prefix + id + "\x00k"},
		{"flag twice", id + "\x00" + path + "\x00kk"},
		{"unknown flag", id + "\x00" + path + "\x00kx"},
		{"fds without flags", id + "\x00" + path + "\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(p[1])
			if r, err := parseReg(tc.body, []int{p[0]}); err == nil {
				r.close()
				t.Fatalf("parseReg(%q) accepted it", tc.body)
			}
			if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
				unix.Close(p[0])
				t.Fatalf("parseReg(%q) left its fd open (F_GETFD: %v)", tc.body, err)
			}
		})
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0) // blocking, as create sends it
	if err != nil {
		unix.Close(p[0])
		t.Fatal(err)
	}
	r, err := parseReg(id+"\x00"+path+"\x00kp", []int{p[0], pidfd})
	if err != nil {
		t.Fatalf("a valid registration: %v", err)
	}
	defer r.close()
	// The owner's pidfd is waited on by the runtime's poller, not by a
	// thread of its own: it must be non-blocking.
	if fl, err := unix.FcntlInt(r.pidfd.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("owner pidfd flags %#o, %v: blocking", fl, err)
	}
}

// The service registers nothing from a peer of another UID, even one that
// got a connection (here: a socket made reachable by everyone). The same
// registration from us tears the run down, so it is the peer check that
// spares it.
func TestServiceRefusesOtherUID(t *testing.T) {
	m := testenv.RequireCgroup2(t)
	sock := serveForTest(t)
	log := filepath.Join(filepath.Dir(sock), "guardian.log")
	t.Setenv(LogEnv, log)
	if err := os.Chmod(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(filepath.Dir(sock)); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o001 == 0 {
			testenv.Missing(t, "other users cannot reach %s (a private TMPDIR?)", d)
		}
		if d == "/" {
			break
		}
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}

	// A run cgroup with a process in it.
	parent := testParent(t, m)
	id := runid.Generate()
	run := filepath.Join(parent, cgroup.Prefix+id)
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(run)
	if err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "1000")
	sleep.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	err = sleep.Start()
	cg.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleep.Process.Kill()
		_ = sleep.Wait()
		_ = cgroup.At(run).WaitEmpty(context.Background())
		_ = unix.Rmdir(run)
	})
	reg := "R " + id + "\x00" + run + "\x00"

	// Registered by nobody, who then hangs up: refused.
	const nobody = 65534
	if err := registerAs(sock, nobody, reg); err != nil {
		t.Fatal(err)
	}
	populated := func() bool {
		b, _ := os.ReadFile(filepath.Join(run, "cgroup.events"))
		return strings.Contains(string(b), "populated 1")
	}
	testenv.Eventually(t, 10*time.Second, "the service refuses the connection or tears the run down", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "refused a connection from uid 65534") || !populated()
	})
	if !populated() {
		t.Fatal("another UID's registration tore the run down")
	}

	// Registered by us, who then hang up: torn down.
	if err := registerAs(sock, os.Geteuid(), reg); err != nil {
		t.Fatal(err)
	}
	if err := sleep.Wait(); err == nil {
		t.Fatal("sleep exited 0; want it killed")
	}
	testenv.Eventually(t, 10*time.Second, "the run cgroup is removed", func() bool {
		_, err := os.Stat(run)
		return errors.Is(err, os.ErrNotExist)
	})
}

// registerAs connects to sock with uid's credentials, sends msg (unless
// the service hung up first) and hangs up. The connect happens on a thread of its own whose UID alone is
// changed (a raw setresuid, not Go's all-threads one); the thread is never
// unlocked, so it ends with its goroutine.
func registerAs(sock string, uid int, msg string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			if uid != os.Geteuid() {
				if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
					return e
				}
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
				return err
			}
			// A refused peer may find the connection closed already.
			if _, err := unix.Write(fd, []byte(msg)); err != nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
				return err
			}
			return nil
		}()
	}()
	return <-errc
}

// serveForTest runs a service in this process, its socket (and pid file,
// naming us) in a directory of their own that is also the records'
// directory, until the test ends. It returns the socket's path.
func serveForTest(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "snakepit-records-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	tb.Setenv(record.DirEnv, filepath.Join(dir, "runs"))
	sock := SocketPath()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(PIDPath(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, time.Hour) }()
	tb.Cleanup(func() { cancel(); <-done })
	return sock
}

// testParent makes a cgroup parent for the test's runs, removed (once
// empty) at its end.
func testParent(t *testing.T, m cgroup.Mount) string {
	t.Helper()
	parent := filepath.Join(m.Path, "sptest-guardian-"+runid.Generate())
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Rmdir(parent); err != nil {
			t.Errorf("remove %s: %v", parent, err)
		}
	})
	return parent
}

// Runs of one owner registered with its pidfd (create --owner-pid) share
// one death notice: its thread pidfds are opened once, however many runs.
func TestOwnersShareOneNotice(t *testing.T) {
	requireThreadNotice(t)
	cmd, _, _ := threads(t, 2)
	pid := cmd.Process.Pid
	var o owners
	const k = 20
	var dying []<-chan struct{}
	for range k {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "pidfd")
		defer f.Close()
		d, release := o.notice(f)
		defer release()
		dying = append(dying, d)
	}
	o.mu.Lock()
	n := o.m[pid]
	notices := len(o.m)
	o.mu.Unlock()
	if notices != 1 || n == nil || n.refs != k {
		t.Fatalf("%d runs of one owner: %d notices (refs %v), want 1 shared", k, notices, n)
	}
	for _, d := range dying[1:] {
		if d != dying[0] {
			t.Fatal("runs of one owner wait on different notices")
		}
	}
	testenv.Eventually(t, 10*time.Second, "the owner's threads watched", func() bool { return len(n.d.watching()) != 0 })
	if got := len(n.d.watching()); got > watchThreads {
		t.Fatalf("%d threads watched, want at most %d", got, watchThreads)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dying[0]:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGKILL of the owner not noticed within 10s")
	}
	o.mu.Lock()
	left := len(o.m)
	o.mu.Unlock()
	if left != 0 {
		t.Fatal("a fired notice stayed in the map: a later owner under the PID would join it")
	}
}

// ownerOfRuns sets up a service of this test's, a cgroup parent for its
// runs, an owner process (two threads) and a client connected to the
// service that registers runs for that owner.
func ownerOfRuns(t *testing.T) (string, *exec.Cmd, record.Owner, *Client) {
	t.Helper()
	m := testenv.RequireCgroup2(t)
	sock := serveForTest(t)
	parent := testParent(t, m)
	cmd, _, _ := threads(t, 2)
	owner, err := record.OwnerOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{o: noBinary, sock: sock, regs: map[watchKey]*clientReg{}}
	if err := c.connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropClient(c) })
	return parent, cmd, owner, c
}

// Every run an owner registered with its pidfd goes when it is killed.
func TestServiceTearsDownEveryRunOfAnOwner(t *testing.T) {
	parent, cmd, owner, c := ownerOfRuns(t)
	ctx := context.Background()
	const k = 10
	var runs []string
	for range k {
		id := runid.Generate()
		run := filepath.Join(parent, cgroup.Prefix+id)
		if err := os.Mkdir(run, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Rmdir(run) })
		runs = append(runs, run)
		if err := c.Register(ctx, Registration{ID: id, CgroupPath: run, Owner: owner}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, "every run of the killed owner", runs)
}

// waitRemoved waits until every directory in runs is gone.
func waitRemoved(t *testing.T, what string, runs []string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what+" removed", func() bool {
		for _, run := range runs {
			if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
				return false
			}
		}
		return true
	})
}

// An owner that guards no run does not start (or reach for) a service when
// its own dies: it connects again with its next run. One that guards runs
// registers them again at once.
func TestClientReconnectsOnlyForRuns(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "guardian.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan *net.UnixConn, 4)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	accept := func() *net.UnixConn {
		t.Helper()
		select {
		case c := <-conns:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no connection within 10s")
			return nil
		}
	}
	ctx := context.Background()
	c := &Client{sock: sock, regs: map[watchKey]*clientReg{}}
	if err := c.connect(ctx); err != nil {
		t.Fatal(err)
	}
	accept().Close() // the service dies
	testenv.Eventually(t, 10*time.Second, "the client without runs drops its connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn == nil
	})
	select {
	case <-conns:
		t.Fatal("a client without runs connected again")
	default:
	}

	// The next run connects again, and is registered again when that
	// service dies in turn.
	if err := c.ensureConnected(ctx); err != nil {
		t.Fatal(err)
	}
	id := runid.Generate()
	if err := c.Register(ctx, Registration{ID: id}); err != nil {
		t.Fatal(err)
	}
	accept().Close()
	again := accept()
	defer again.Close()
	buf := make([]byte, 256)
	n, err := again.Read(buf)
	if err != nil || string(buf[:n]) != "R "+id+"\x00\x00" {
		t.Fatalf("after the service died: %q, %v; want the run registered again", buf[:n], err)
	}
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	conn.Close()
}

// fakeService listens at a new socket and hands over what connects.
type fakeService struct {
	ln    *net.UnixListener
	conns chan *net.UnixConn
}

func newFakeService(t *testing.T, sock string) *fakeService {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeService{ln: ln, conns: make(chan *net.UnixConn, 8)}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			f.conns <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

// noBinary keeps a client from starting a real service.
var noBinary = ClientOptions{Binary: "/nonexistent/snakepit"}

// acceptRegs reads n registrations from the first connection that carries
// any: a client probing whether a service answers connects and closes.
func (f *fakeService) acceptRegs(t *testing.T, n int) (*net.UnixConn, []string) {
	t.Helper()
	for {
		conn := f.accept(t)
		buf := make([]byte, 512)
		var ids []string
		for len(ids) < n {
			m, err := conn.Read(buf)
			if err != nil {
				break
			}
			id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:m]), "R "), "\x00")
			ids = append(ids, id)
		}
		if len(ids) == n {
			return conn, ids
		}
		if len(ids) > 0 {
			t.Fatalf("the connection closed after %v", ids)
		}
	}
}

// fakeServiceDir starts a fake service at a socket in a new directory.
func fakeServiceDir(t *testing.T) (string, *fakeService) {
	sock := filepath.Join(t.TempDir(), "guardian.sock")
	return sock, newFakeService(t, sock)
}

func (f *fakeService) accept(t *testing.T) *net.UnixConn {
	t.Helper()
	select {
	case c := <-f.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection within 10s")
		return nil
	}
}

// fakeConnected returns a client (that cannot start a service) connected
// to a fake service, and the service's end of that connection.
func fakeConnected(t *testing.T) (*Client, *fakeService, *net.UnixConn) {
	t.Helper()
	sock, svc := fakeServiceDir(t)
	c := &Client{o: noBinary, sock: sock, regs: map[watchKey]*clientReg{}}
	if err := c.connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c, svc, svc.accept(t)
}

// readRegs reads n registrations from conn and returns their run IDs.
func readRegs(t *testing.T, conn *net.UnixConn, n int) []string {
	t.Helper()
	var ids []string
	buf := make([]byte, 512)
	for len(ids) < n {
		m, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %v: %v", ids, err)
		}
		id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:m]), "R "), "\x00")
		ids = append(ids, id)
	}
	return ids
}

// A registration that fails for a reason of its own (its owner cannot be
// pinned) keeps the connection: closing it would tell the service the
// owner died, and it would tear down the owner's other runs.
func TestClientKeepsConnectionOnRegistrationError(t *testing.T) {
	ctx := context.Background()
	c, _, server := fakeConnected(t)
	a := runid.Generate()
	if err := c.Register(ctx, Registration{ID: a}); err != nil {
		t.Fatal(err)
	}
	readRegs(t, server, 1)
	before := c.conn
	// The owner (a live process) cannot be pinned: no descriptor is left
	// for its pidfd (no other test runs meanwhile).
	owner := exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = owner.Process.Kill(); _ = owner.Wait() }()
	id, err := reaper.IdentityOf(owner.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := record.BootID()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	free, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(free)
	low := lim
	low.Cur = uint64(free) // the lowest free descriptor is now out of reach
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	err = c.Register(ctx, Registration{ID: runid.Generate(), Owner: record.Owner{PID: id.PID, Start: id.Start, BootID: boot}})
	if serr := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); serr != nil {
		t.Fatal(serr)
	}
	if err == nil {
		t.Fatal("a registration whose owner cannot be pinned went through")
	}
	if c.conn != before {
		t.Fatal("the client replaced its connection: the service would take the close for our death")
	}
	carries(t, c, server)
	dropClient(c)
}

// When the service died and the watch keeps trying, a Register that meets
// the next service first reconnects; the watch must then leave that
// connection alone (closing it would tear down every run on it).
func TestClientRetryLeavesNewConnection(t *testing.T) {
	sock, svc := fakeServiceDir(t)
	done := make(chan struct{}, 4)
	old := retryReturned
	retryReturned = func() { done <- struct{}{} }
	defer func() { retryReturned = old }()
	ctx := context.Background()
	c := &Client{o: noBinary, sock: sock, regs: map[watchKey]*clientReg{}}
	if err := c.connect(ctx); err != nil {
		t.Fatal(err)
	}
	a := runid.Generate()
	if err := c.Register(ctx, Registration{ID: a}); err != nil {
		t.Fatal(err)
	}
	first := svc.accept(t)
	readRegs(t, first, 1)
	svc.ln.Close() // the service dies: its socket goes, and the watch retries
	first.Close()
	testenv.Eventually(t, 10*time.Second, "the client without a connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.conn == nil
	})
	next := newFakeService(t, sock)
	b := runid.Generate()
	if err := c.Register(ctx, Registration{ID: b}); err != nil {
		t.Fatal(err)
	}
	server, _ := next.acceptRegs(t, 2) // a again, and b
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch's retry did not end")
	}
	carries(t, c, server)
	dropClient(c)
}

// A Register whose reconnect fails (its ctx ended, no service answers)
// must not leave the owner's other runs registered nowhere: they are
// registered with the next service that answers.
func TestClientFailedReconnectKeepsTrying(t *testing.T) {
	sock, svc := fakeServiceDir(t)
	ctx := context.Background()
	// Connected by hand, with no watch: the connection's death is found
	// by the next Register alone.
	conn, err := connectTo(sock)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{o: noBinary, sock: sock, conn: conn, regs: map[watchKey]*clientReg{}}
	a := runid.Generate()
	if err := c.Register(ctx, Registration{ID: a}); err != nil {
		t.Fatal(err)
	}
	server := svc.accept(t)
	readRegs(t, server, 1)
	svc.ln.Close()
	server.Close()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Register(cctx, Registration{ID: runid.Generate()}); err == nil {
		t.Fatal("Register with no service and a done ctx went through")
	}
	next := newFakeService(t, sock)
	if _, got := next.acceptRegs(t, 1); got[0] != a {
		t.Fatalf("the next service got %v, want %s registered again", got, a)
	}
	dropClient(c)
}

// carries checks that c still uses the connection server holds: a new
// registration arrives there.
func carries(t *testing.T, c *Client, server *net.UnixConn) {
	t.Helper()
	id := runid.Generate()
	if err := c.Register(context.Background(), Registration{ID: id}); err != nil {
		t.Fatal(err)
	}
	if got := readRegs(t, server, 1); got[0] != id {
		t.Fatalf("the connection carried %v, want %s", got, id)
	}
}

// dropClient closes c's connection and forgets its runs (a test's end).
func dropClient(c *Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.regs = nil, nil
}

// A forget (`snakepit kill`, on a connection of its own) names a run by ID
// only. One that arrives after another run of that ID was registered must
// leave that live run watched: it forgets only a run whose cgroup is gone.
func TestForgetSparesALiveRun(t *testing.T) {
	parent, cmd, owner, c := ownerOfRuns(t)
	sock := c.sock
	ctx := context.Background()
	mkRun := func() (string, string) {
		id := runid.Generate()
		run := filepath.Join(parent, cgroup.Prefix+id)
		if err := os.Mkdir(run, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Rmdir(run) })
		return id, run
	}
	a, runA := mkRun()
	if err := c.Register(ctx, Registration{ID: a, CgroupPath: runA, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	killA := filepath.Join(runA, "cgroup.kill")
	testenv.Eventually(t, 10*time.Second, "the service holds the run's cgroup.kill", func() bool {
		return testenv.FilesOpen(os.Getpid(), killA) == 2 // the client's and the service's
	})
	// The forget, then a registration on the same connection: once the
	// service holds that one, it has read the forget.
	conn, err := connectTo(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("U " + a)); err != nil {
		t.Fatal(err)
	}
	b, runB := mkRun()
	killB := filepath.Join(runB, "cgroup.kill")
	f, err := os.OpenFile(killB, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.WriteMsgUnix([]byte("R "+b+"\x00"+runB+"\x00k"), unix.UnixRights(int(f.Fd())), nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the service holds the second run's cgroup.kill", func() bool {
		return testenv.FilesOpen(os.Getpid(), killB) == 1
	})
	if n := testenv.FilesOpen(os.Getpid(), killA); n != 2 {
		t.Fatalf("the live run was forgotten: %d descriptors of its cgroup.kill, want the service's too", n)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the run torn down with its owner", func() bool {
		_, err := os.Stat(runA)
		return errors.Is(err, os.ErrNotExist)
	})
}

// Two runs of one ID under different parents are two runs: the second
// registration does not replace the first (whose owner's death then left
// it running).
func TestSameIDUnderTwoParents(t *testing.T) {
	parent, cmd, owner, c := ownerOfRuns(t)
	other := filepath.Join(parent, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Rmdir(other) })
	id := runid.Generate()
	var runs []string
	for _, p := range []string{parent, other} {
		run := filepath.Join(p, cgroup.Prefix+id)
		if err := os.Mkdir(run, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Rmdir(run) })
		runs = append(runs, run)
		if err := c.Register(context.Background(), Registration{ID: id, CgroupPath: run, Owner: owner}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, "both runs of the killed owner", runs)
}

func TestOutsideRuns(t *testing.T) {
	for p, want := range map[string]string{
		"/user.slice/x.scope":                         "",
		"/snakepit/snakepit-abc1234":                  "/snakepit",
		"/snakepit/snakepit-abc1234/inner":            "/snakepit",
		"/snakepit/snakepit-abc1234/snakepit-def5678": "/snakepit",
		"/snakepit/snakepit-guardian":                 "", // not a run ID
		"/snakepit-abc1234":                           "/",
	} {
		got, in := outsideRuns(p)
		if in != (want != "") || got != want {
			t.Errorf("outsideRuns(%q) = %q, %v; want %q", p, got, in, want)
		}
	}
}

// The service's environment lacks the marker of a run its starter may be
// in: that run's teardown would take it for one of its own.
func TestServiceEnvDropsRunMarker(t *testing.T) {
	t.Setenv(runid.EnvVar, "abc1234")
	for _, kv := range serviceEnv() {
		if strings.HasPrefix(kv, runid.EnvVar+"=") {
			t.Fatalf("service environment has %s", kv)
		}
	}
}

// A service started by an owner inside a run (a nested `snakepit run`)
// leaves that run: the outer run's kill took the service, and with it the
// guard of the inner runs.
func TestServiceLeavesStartersRun(t *testing.T) {
	testenv.RequireRoot(t)
	m := testenv.RequireCgroup2(t)
	parent := testParent(t, m)
	outer := filepath.Join(parent, cgroup.Prefix+runid.Generate())
	if err := os.Mkdir(outer, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Rmdir(outer) })
	t.Cleanup(func() { _ = unix.Rmdir(filepath.Join(parent, "guardians")) })
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := cgroup.At(outer).Move(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := outOfRuns(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	p, err := cgroup.PathOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(parent, "guardians"); filepath.Join(m.Path, p) != want {
		t.Fatalf("the service is in %s; want %s (outside every run, not in a parent of runs)", p, want)
	}
}

// The client keys its runs by ID and cgroup, as the service does: a second
// run of one ID (another parent) replaced the first in its table, whose
// unregistration then dropped the second, and which a new service never
// heard of again.
func TestClientKeepsRunsOfOneIDApart(t *testing.T) {
	ctx := context.Background()
	c, svc, server := fakeConnected(t)
	id := runid.Generate()
	a, b := "/nonexistent/a/"+cgroup.Prefix+id, "/nonexistent/b/"+cgroup.Prefix+id
	for _, p := range []string{a, b} {
		if err := c.Register(ctx, Registration{ID: id, CgroupPath: p}); err != nil {
			t.Fatal(err)
		}
	}
	readRegs(t, server, 2)
	c.Unregister(id, a)
	buf := make([]byte, 512)
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "U "+id {
		t.Fatalf("read %q, %v; want the unregistration", buf[:n], err)
	}
	server.Close() // the service dies: the client registers what is left
	again := svc.accept(t)
	n, err := again.Read(buf)
	if want := "R " + id + "\x00" + b + "\x00"; err != nil || string(buf[:n]) != want {
		t.Fatalf("after the service died: %q, %v; want %q", buf[:n], err, want)
	}
	dropClient(c)
}
