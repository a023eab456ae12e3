//go:build linux

package guardian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/posix"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/systemd"
)

// The guardian service: one process per user (per record directory) that
// owners register their runs with over a unix socket. An owner passes the
// run's cgroup.kill over SCM_RIGHTS and keeps the connection open: the
// kernel closes it when the owner dies, however it dies, and the service
// sees EOF and kills the runs registered on it. A run whose owner is another
// process (create --owner-pid) comes with a pidfd of that owner instead,
// and is torn down when the pidfd becomes readable.
//
// The service never writes: an owner connects and sends without waiting
// for it (connect to a listening socket completes in the kernel), and a
// read on the connection returns only when the service is gone.
//
// Messages (SOCK_SEQPACKET, one per datagram), owner -> service:
//
//	"R <id>\x00<cgroup path or empty>\x00<flags>"
//	                   flags: k = cgroup.kill attached, p = owner pidfd attached
//	                   (in that order); g = the owner is gone already (a run
//	                   registered again after the owner died while no
//	                   service ran): tear it down at once
//	                   "U <id>": the owner tore the run down itself

// IdleEnv, when set to a duration, is how long the service lives with no
// connection and no registration (default DefaultIdle).
const IdleEnv = "SNAKEPIT_GUARDIAN_IDLE"

// DefaultIdle is how long an idle service waits before it exits.
const DefaultIdle = 30 * time.Second

// ErrNoService means no guardian service could be reached or started.
var ErrNoService = errors.New("guardian: no guardian service")

// DirEnv, when set, names the directory of the service's socket, start
// lock and pid file (a test harness's own service).
const DirEnv = "SNAKEPIT_GUARDIAN_DIR"

// ServiceDir is where the service's socket, start lock and pid file live:
// $SNAKEPIT_GUARDIAN_DIR, else beside the run records (record.Dir), so
// that root, each user (in $XDG_RUNTIME_DIR) and a test with its own record
// directory each get their own service.
func ServiceDir() string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	return filepath.Dir(record.Dir())
}

// SocketPath is the service's socket.
func SocketPath() string { return filepath.Join(ServiceDir(), "guardian.sock") }

// A service's files live beside its socket: an owner connected to one
// (whose environment may name another directory since) and the service
// itself find them from the socket's path.
func lockPathOf(sock string) string { return filepath.Join(filepath.Dir(sock), "guardian.lock") }

func pidPathOf(sock string) string { return filepath.Join(filepath.Dir(sock), "guardian.pid") }

// PIDPath holds the service's PID while it runs.
func PIDPath() string { return pidPathOf(SocketPath()) }

// ServiceArgs is the service's command line after the binary; it expects
// its listening socket at fd 3.
func ServiceArgs() []string { return []string{Command, "--serve"} }

// Registration is one run handed to the service.
type Registration struct {
	ID string
	// CgroupPath is the run cgroup; empty for a POSIX run (the service
	// then tears it down from its record).
	CgroupPath string
	// Owner, when set, is the process whose death ends the run (watched
	// through a pidfd); zero means the registering process itself, through
	// its connection.
	Owner record.Owner
}

// ClientOptions configure an owner's connection to the service.
type ClientOptions struct {
	// Binary is the snakepit executable that starts a service when none
	// runs (FindBinary). Without one, only a running service can be used.
	Binary string
	// Reaper, if set, is the caller's wait4(-1) loop; a service we start
	// is started under its lock.
	Reaper *reaper.Reaper
}

// Client is an owner's connection to the guardian service. It re-registers
// its runs with a new service should the service die.
type Client struct {
	o    ClientOptions
	sock string

	mu   sync.Mutex
	conn *net.UnixConn
	svc  reaper.Identity
	regs map[watchKey]*clientReg // by ID and cgroup: one ID may name runs under two parents
}

type clientReg struct {
	Registration
	kill *os.File // the run's cgroup.kill; nil for POSIX runs
}

var shared struct {
	sync.Mutex
	m map[string]*Client
}

// Shared returns this process's client of the service for the current
// SocketPath, connecting (and starting a service) on first use. Its
// connection lives as long as the process: closing it would tell the
// service the owner died.
func Shared(ctx context.Context, o ClientOptions) (*Client, error) {
	sock := SocketPath()
	shared.Lock()
	defer shared.Unlock()
	if c := shared.m[sock]; c != nil {
		if err := c.ensureConnected(ctx); err != nil {
			return nil, err
		}
		return c, nil
	}
	c := &Client{o: o, sock: sock, regs: map[watchKey]*clientReg{}}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	if shared.m == nil {
		shared.m = map[string]*Client{}
	}
	shared.m[sock] = c
	return c, nil
}

// ensureConnected connects a client again whose service died while it
// guarded no run (watch then leaves it unconnected).
func (c *Client) ensureConnected(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return nil
	}
	return c.reconnectLocked(ctx)
}

// Guardian returns the service process the client is connected to.
func (c *Client) Guardian() reaper.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.svc
}

// Register hands run r to the service. Once it returns, the run is torn
// down if its owner dies: the message is queued on the connection before
// any EOF the owner's death can cause.
func (c *Client) Register(ctx context.Context, r Registration) error {
	cr := &clientReg{Registration: r}
	if r.CgroupPath != "" {
		f, err := os.OpenFile(filepath.Join(r.CgroupPath, "cgroup.kill"), os.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("guardian: %w", err)
		}
		cr.kill = f // nil without cgroup.kill (Linux < 5.14): killed by path
	}
	if r.Owner.PID != 0 && r.CgroupPath != "" {
		// Adopted by the next service should this one die (it alone
		// watches this owner): it must know where to look.
		if err := noteParent(c.sock, filepath.Dir(r.CgroupPath)); err != nil {
			logf("owner %d: run %s: note its parent: %v", os.Getpid(), r.ID, err)
		}
	}
	key := watchKey{r.ID, r.CgroupPath}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.regs[key]; old != nil {
		old.close()
	}
	c.regs[key] = cr
	err := c.send(cr, false)
	if err == nil {
		return nil
	}
	var ce *connError
	if !errors.As(err, &ce) {
		// This registration's own failure (its owner gone, no pidfd):
		// the connection is sound, and closing it would tell the service
		// that we died, tearing down our other runs.
		delete(c.regs, key)
		cr.close()
		return err
	}
	if err := c.reconnectLocked(ctx); err != nil {
		delete(c.regs, key)
		cr.close()
		if c.conn == nil && len(c.regs) > 0 {
			// Our other runs are registered nowhere now: keep trying
			// for them (the watch of the dead connection saw it
			// replaced, and gave up).
			go c.retry(nil)
		}
		return err
	}
	return nil
}

// retryReturned is called as retry returns (a test's hook).
var retryReturned = func() {}

// connError is a failure to write to the service's connection: the
// connection is broken, the service gone.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// Unregister tells the service the owner tore down itself the run
// registered with id and cgroupPath.
func (c *Client) Unregister(id, cgroupPath string) {
	key := watchKey{id, cgroupPath}
	c.mu.Lock()
	defer c.mu.Unlock()
	cr := c.regs[key]
	if cr == nil {
		return
	}
	delete(c.regs, key)
	cr.close()
	if c.conn != nil {
		_, _ = c.conn.Write([]byte("U " + id))
	}
}

func (cr *clientReg) close() {
	if cr.kill != nil {
		cr.kill.Close()
	}
}

// errOwnerGone: a run's owner process is gone (exited, or its PID
// reused).
var errOwnerGone = errors.New("the owner is gone")

// send hands cr to the service. A run whose owner is gone is an error
// (errOwnerGone), unless goneOK: registered again after the owner died,
// the service is told so and tears it down at once.
func (c *Client) send(cr *clientReg, goneOK bool) error {
	if c.conn == nil {
		return &connError{net.ErrClosed}
	}
	var fds []int
	flags := ""
	if cr.kill != nil {
		fds = append(fds, int(cr.kill.Fd()))
		flags += "k"
	}
	if cr.Owner.PID != 0 {
		pin, err := reaper.Pin(cr.Owner.Identity())
		switch {
		case errors.Is(err, reaper.ErrNoProcess) || errors.Is(err, reaper.ErrReused):
			if !goneOK {
				return fmt.Errorf("guardian: owner %v: %w: %w", cr.Owner, errOwnerGone, err)
			}
			flags += "g"
		case err != nil:
			return fmt.Errorf("guardian: owner %v: %w", cr.Owner, err)
		case pin.FD() < 0:
			pin.Close()
			return fmt.Errorf("guardian: owner %v: no pidfd on this kernel", cr.Owner)
		default:
			defer pin.Close()
			fds = append(fds, pin.FD())
			flags += "p"
		}
	}
	msg := "R " + cr.ID + "\x00" + cr.CgroupPath + "\x00" + flags
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.conn.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
		return &connError{err}
	}
	return nil
}

// connect dials the service (starting one if none answers) and starts the
// watch for its death.
func (c *Client) connect(ctx context.Context) error {
	conn, svc, err := dialOrStart(ctx, c.sock, c.o)
	if err != nil {
		return err
	}
	c.conn, c.svc = conn, svc
	go c.watch(conn)
	return nil
}

// reconnectLocked replaces a broken connection and registers every run
// again. c.mu is held. A run that cannot be registered again for a reason
// of its own is dropped (and logged): it must not cost the others theirs.
func (c *Client) reconnectLocked(ctx context.Context) error {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	if err := c.connect(ctx); err != nil {
		return err
	}
	for key, cr := range c.regs {
		err := c.send(cr, true)
		var ce *connError
		switch {
		case errors.As(err, &ce):
			return fmt.Errorf("guardian: register %s again: %w", key.id, err)
		case err != nil:
			logf("owner %d: run %s cannot be registered again, left unguarded: %v", os.Getpid(), key.id, err)
			delete(c.regs, key)
			cr.close()
		}
	}
	return nil
}

// watch reads conn, on which the service never writes after its hello:
// the read returns only when the service is gone. Then it connects to (or
// starts) another and registers the runs again.
func (c *Client) watch(conn *net.UnixConn) {
	var b [64]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			break
		}
	}
	c.retry(conn)
}

// retry connects again after the service on conn died (conn nil: after a
// failed reconnect, none) and registers every run again, unless someone
// else has done so meanwhile.
func (c *Client) retry(conn *net.UnixConn) {
	defer retryReturned()
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if c.conn != conn {
			return // replaced already (a Register reconnected)
		}
		if len(c.regs) == 0 {
			// Nothing to guard: no service is started for nothing. The
			// next run connects again (Shared).
			if c.conn != nil {
				c.conn.Close()
				c.conn = nil
			}
			return
		}
		err := c.reconnectLocked(context.Background())
		if err == nil {
			logf("owner %d: service died; registered %d runs again", os.Getpid(), len(c.regs))
			return
		}
		if attempt == 50 {
			logf("owner %d: service died and none can be had: %v", os.Getpid(), err)
			return
		}
		conn = c.conn // nil: the failed attempt closed it
		c.mu.Unlock()
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
		c.mu.Lock()
	}
}

// Forget tells the service at SocketPath that runs ids were torn down by
// someone other than their owner (`snakepit kill`): it stops watching their
// owners and closes what it held of them. Without it, a run of `create
// --owner-pid` killed from outside stayed registered, and kept the service
// from idling out, until its owner died. With no service listening there
// is nothing to forget.
func Forget(ids ...string) error {
	conn, err := connectTo(SocketPath())
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil
		}
		return fmt.Errorf("guardian: forget %s: %w", strings.Join(ids, " "), err)
	}
	defer conn.Close()
	for _, id := range ids {
		if _, err := conn.Write([]byte("U " + id)); err != nil {
			return fmt.Errorf("guardian: forget %s: %w", id, err)
		}
	}
	return nil
}

// Probe reports the service listening at SocketPath, without starting one.
func Probe() (reaper.Identity, error) {
	conn, id, err := dial(SocketPath())
	if err != nil {
		return id, err
	}
	conn.Close()
	if id.PID <= 0 {
		return id, fmt.Errorf("%w: a service answers at %s, but its pid file names no live process", ErrNoService, SocketPath())
	}
	return id, nil
}

// dial connects to sock. It does not wait for the service: a connection
// the service never accepts (it was exiting) is reset, which the client's
// watch sees, and it registers again. The service's identity comes from
// its pid file, written under the start lock.
func dial(sock string) (*net.UnixConn, reaper.Identity, error) {
	var id reaper.Identity
	conn, err := connectTo(sock)
	if err != nil {
		return nil, id, err
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(sock), "guardian.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			id, _ = reaper.IdentityOf(pid)
		}
	}
	return conn, id, nil
}

func connectTo(sock string) (*net.UnixConn, error) {
	return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
}

// dialOrStart connects to the service, starting one under the start lock
// when none answers: of owners that race here, one starts it and the others
// find it running once they hold the lock.
func dialOrStart(ctx context.Context, sock string, o ClientOptions) (*net.UnixConn, reaper.Identity, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		conn, id, err := dial(sock)
		if err == nil {
			return conn, id, nil
		}
		last = err
		if err := ctx.Err(); err != nil {
			return nil, id, err
		}
		started, err := startLocked(ctx, sock, o)
		if err != nil {
			return nil, id, err
		}
		if !started && attempt > 0 {
			time.Sleep(time.Duration(attempt) * 5 * time.Millisecond)
		}
	}
	return nil, reaper.Identity{}, fmt.Errorf("%w at %s: %w", ErrNoService, sock, last)
}

// startLocked takes the start lock and, if still no service answers,
// starts one. started is false when another owner's service answered.
func startLocked(ctx context.Context, sock string, o ClientOptions) (started bool, err error) {
	unlock, err := lockStart(sock)
	if err != nil {
		return false, err
	}
	defer unlock()
	if conn, _, err := dial(sock); err == nil {
		conn.Close()
		return false, nil
	}
	bin, err := FindBinary(o.Binary)
	if err != nil {
		return false, fmt.Errorf("%w: none runs at %s, and none can be started: %w", ErrNoService, sock, err)
	}
	ln, err := listen(sock)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrNoService, err)
	}
	defer ln.Close()
	pid, err := startService(ctx, bin, ln, o.Reaper)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrNoService, err)
	}
	_ = os.WriteFile(pidPathOf(sock), []byte(strconv.Itoa(pid)+"\n"), 0o644)
	return true, nil
}

// lockStart takes the exclusive start lock (flock), which also serializes
// an idle service's exit against a start.
func lockStart(sock string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoService, err)
	}
	return takeLock(sock, unix.O_CREAT)
}

// takeLock opens the lock file of the service at sock (creating it with
// flags O_CREAT) and locks it.
func takeLock(sock string, flags int) (unlock func(), err error) {
	fd, err := unix.Open(lockPathOf(sock), unix.O_RDWR|unix.O_CLOEXEC|flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoService, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: lock: %w", ErrNoService, err)
	}
	return func() { unix.Close(fd) }, nil
}

// listen binds a fresh listening socket at sock (replacing a stale one:
// we hold the start lock and nothing answered there).
func listen(sock string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(sock)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", sock, err)
	}
	// Only this user registers runs here.
	_ = os.Chmod(sock, 0o600)
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), sock), nil
}

// startService starts `bin __guardian --serve` with the listening socket as
// fd 3, detached: its own session, stdio on /dev/null, no Pdeathsig.
func startService(ctx context.Context, bin string, ln *os.File, rp *reaper.Reaper) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Not CommandContext: the service outlives ctx and us.
	cmd := exec.Command(bin, ServiceArgs()...)
	cmd.Env = serviceEnv()
	cmd.ExtraFiles = []*os.File{ln}
	cmd.Dir = "/" // it must not keep the first owner's directory busy
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	pid, err := reaper.StartDetached(rp, cmd)
	if err != nil {
		return 0, fmt.Errorf("start guardian service: %w", err)
	}
	_ = placeOutside(ctx, pid)
	return pid, nil
}

// serviceEnv is the service's environment: ours without a run's marker.
// An owner inside a run (`snakepit run` under `snakepit run`) would pass
// its run ID on, and that run's teardown (gc, POSIX) would take the
// service for one of its processes.
func serviceEnv() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, runid.EnvVar+"=") })
}

// placeOutside moves a guardian (pid) out of its starter's systemd unit
// into a scope of its own, snakepit-guardian-<pid>.scope: a unit's
// SIGKILL (systemctl kill, a stop timeout) must not take the guardian
// with the owner it watches. Without systemd it stays in the starter's
// cgroup unless that is inside a run (an owner nested in another run):
// then it leaves the run (outOfRuns), whose kill would otherwise take the
// guardian of the inner runs with it. Best effort: should systemd refuse,
// a run in a scope still has its BindsTo= on the owner's unit, and a run
// below a delegated unit dies with the unit.
func placeOutside(ctx context.Context, pid int) error {
	if !systemd.IsRunning() {
		if err := outOfRuns(pid); err != nil {
			logf("service %d stays in its starter's run: %v", pid, err)
			return err
		}
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := systemd.StartTransientScope(sctx, ScopeName(pid), []int{pid}, systemd.ScopeOptions{
		Description: "snakepit guardian",
		User:        os.Geteuid() != 0,
	})
	if err != nil {
		return fmt.Errorf("guardian: own scope: %w", err)
	}
	return nil
}

// outOfRuns moves pid, if its cgroup is inside a run cgroup, to the leaf
// "guardians" (not a run: no run ID) of the cgroup that holds the
// outermost such run. Not into that cgroup itself: a parent of runs with a
// process in it could no longer turn controllers on for its children (the
// limits of the runs made after).
func outOfRuns(pid int) error {
	p, err := cgroup.PathOf(pid)
	if err != nil {
		return err
	}
	outside, ok := outsideRuns(p)
	if !ok {
		return nil
	}
	mnt, err := cgroup.FindMount()
	if err != nil {
		return err
	}
	leaf := filepath.Join(mnt.Path, outside, "guardians")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return cgroup.At(leaf).Move(pid)
}

// outsideRuns returns the cgroup above the outermost run cgroup on cgroup
// path p, and whether p is inside a run.
func outsideRuns(p string) (string, bool) {
	runs := inventory.RunCgroupsOn(p)
	if len(runs) == 0 {
		return "", false
	}
	return filepath.Dir(runs[len(runs)-1]), true
}

// ScopeName is the transient scope a guardian process pid lives in under
// systemd.
func ScopeName(pid int) string { return "snakepit-guardian-" + strconv.Itoa(pid) + ".scope" }

// serveInherited is the service's body: it serves the listening socket it
// inherited at fd 3.
func serveInherited(ctx context.Context) error {
	dropInherited()
	f := os.NewFile(3, "guardian.sock")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("guardian service: fd 3: %w", err)
	}
	if a, ok := l.Addr().(*net.UnixAddr); ok && a.Name != "" {
		notePID(a.Name)
	}
	idle := DefaultIdle
	if v := os.Getenv(IdleEnv); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			idle = d
		}
	}
	return Serve(ctx, l.(*net.UnixListener), idle)
}

// notePID writes the service's pid file if its starter did not (it was
// killed first). Under the start lock, which the starter holds until its
// own write: unlocked, the two raced, and the service's late write landed
// in a directory its starter had gone on to remove (a test's temporary
// one: "directory not empty"). Not when the lock file or the socket is
// gone: the directory is being removed.
func notePID(sock string) {
	unlock, err := takeLock(sock, 0)
	if err != nil {
		return
	}
	defer unlock()
	self := strconv.Itoa(os.Getpid())
	pidPath := pidPathOf(sock)
	if b, err := os.ReadFile(pidPath); (err != nil || strings.TrimSpace(string(b)) != self) && statSock(sock) != 0 {
		_ = os.WriteFile(pidPath, []byte(self+"\n"), 0o644)
	}
}

// dropInherited closes the pipes, sockets and devices we inherited besides
// the listener (fd 3): os/exec passes on every descriptor its caller did
// not mark close-on-exec, and a service that holds an owner's pipe open
// would keep its reader from ever seeing EOF. The runtime's own
// descriptors (epoll, eventfd, cgroup files) are none of these.
func dropInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 3 {
			continue
		}
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && (strings.HasPrefix(l, "pipe:") || strings.HasPrefix(l, "socket:") || strings.HasPrefix(l, "/dev/")) {
			_ = unix.Close(fd)
		}
	}
}

// service is the state of a running service.
type service struct {
	ctx context.Context // Serve's: ends the service
	ln  *net.UnixListener
	// sockPath and sockIno are our socket file, noted at start (no other
	// service can bind the path while we answer on it).
	sockPath string
	sockIno  uint64

	mu      sync.Mutex
	active  int        // connections, pidfd watches and teardowns under way
	idleNow *sync.Cond // signalled when active reaches 0
	closing bool       // no longer accepting: Serve returns once active is 0
	timer   *time.Timer
	idle    time.Duration
	watched map[watchKey]*svcReg // pidfd-owned registrations
	owners  owners               // their owners' death notices
}

// parentsOf is the file that lists, one per line, the parents of the run
// cgroups registered with the service at sock for an owner's pidfd
// (`create --owner-pid`): a service started after it died adopts the runs
// under them too, known parents or not. The registering owner notes its
// parent (noteParent); the next service prunes the list (notedParents).
func parentsOf(sock string) string { return filepath.Join(filepath.Dir(sock), "guardian.parents") }

// noteParent adds parent to the parents file of the service at sock,
// unless it is there already. Both sides hold the file's flock.
func noteParent(sock, parent string) error {
	return withParents(sock, os.O_CREATE, func(f *os.File, noted []string) error {
		if slices.Contains(noted, parent) {
			return nil
		}
		_, err := f.WriteString(parent + "\n")
		return err
	})
}

// notedParents returns the parents in the file of the service at sock
// that still exist, and leaves only those in it.
func notedParents(sock string) []string {
	var out []string
	// Not made when missing: a service must not write into its directory
	// at start (a test's temporary one may be being removed).
	_ = withParents(sock, 0, func(f *os.File, noted []string) error {
		for _, p := range noted {
			if !slices.Contains(out, p) && exists(p) {
				out = append(out, p)
			}
		}
		if len(out) == len(noted) {
			return nil
		}
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.WriteString(strings.Join(append(slices.Clone(out), ""), "\n"))
		return err
	})
	return out
}

// withParents calls fn with the parents file of sock open for appending
// (made if flags has O_CREATE), locked, and the absolute paths it lists.
func withParents(sock string, flags int, fn func(f *os.File, noted []string) error) error {
	f, err := os.OpenFile(parentsOf(sock), os.O_RDWR|os.O_APPEND|flags|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return err
	}
	var noted []string
	for _, p := range strings.Split(string(b), "\n") {
		if filepath.IsAbs(p) {
			noted = append(noted, p)
		}
	}
	return fn(f, noted)
}

type svcReg struct {
	id, cgroup string
	kill       *os.File
	pidfd      *os.File
	ownerGone  bool
	mu         sync.Mutex
	done       bool
}

// Serve runs the service on ln until ctx ends or it has been idle for
// idle; it then stops listening (under the start lock, so a new owner
// starts a new service) and returns once what it watches is done.
func Serve(ctx context.Context, ln *net.UnixListener, idle time.Duration) error {
	s := &service{ctx: ctx, ln: ln, idle: idle, watched: map[watchKey]*svcReg{}}
	s.idleNow = sync.NewCond(&s.mu)
	if addr, ok := ln.Addr().(*net.UnixAddr); ok {
		s.sockPath, s.sockIno = addr.Name, statSock(addr.Name)
	}
	// The adoption below counts as activity from the start; the timer is
	// set under the lock its callback takes, so it sees both.
	s.mu.Lock()
	s.active = 1
	s.timer = time.AfterFunc(idle, s.maybeExit)
	s.mu.Unlock()
	logf("service listening")
	go func() {
		defer s.add(-1)
		s.adopt(ctx)
	}()
	defer context.AfterFunc(ctx, s.stop)()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			break
		}
		if uid, ok := peerAllowed(conn); !ok {
			// The socket is 0600, but only from its chmod on: a peer of
			// another UID (a connect before it, or a root service's
			// socket made under a loose umask) registers nothing here.
			logf("refused a connection from uid %d", uid)
			conn.Close()
			continue
		}
		s.serve(ctx, conn)
	}
	s.mu.Lock()
	s.closing = true
	for s.active > 0 {
		s.idleNow.Wait()
	}
	s.mu.Unlock()
	logf("service exits")
	return nil
}

// serve counts conn as active and serves it.
func (s *service) serve(ctx context.Context, conn *net.UnixConn) {
	s.add(1)
	go s.serveConn(ctx, conn)
}

// adopt watches, through pidfds of their owners, the runs whose recorded
// guardian is dead while their owner lives: runs registered with a service
// that died, by an owner that cannot register them again (`create
// --owner-pid` exits once the run is made). Owners that hold a connection
// register theirs again anyway; a second watch is harmless. Only runs of
// owners with our UID: another user's are their own service's.
func (s *service) adopt(ctx context.Context) {
	var noted []string
	if s.sockPath != "" {
		noted = notedParents(s.sockPath)
	}
	runs, err := inventory.ListRunCgroups(inventory.KnownParents(noted...)...)
	if err != nil {
		return
	}
	n := 0
	for id, path := range runs {
		if ctx.Err() != nil {
			return
		}
		rec, err := record.ReadCgroup(path)
		if err != nil || rec.Guardian == nil || rec.Guardian.PID == os.Getpid() {
			continue
		}
		if st, err := reaper.ReadStat(rec.Guardian.PID); err == nil && st.Start == rec.Guardian.Start && !st.Dead() {
			continue // its guardian lives
		}
		if !ownedByUs(rec.Owner.PID) {
			continue
		}
		pin, err := reaper.Pin(rec.Owner.Identity())
		if err != nil || pin.FD() < 0 {
			if pin != nil {
				pin.Close()
			}
			continue // the owner is gone: gc's to remove
		}
		fd, err := unix.FcntlInt(uintptr(pin.FD()), unix.F_DUPFD_CLOEXEC, 0)
		pin.Close()
		if err != nil {
			continue
		}
		r := &svcReg{id: id, cgroup: path, pidfd: reaper.PidfdFile(fd, "pidfd")}
		if f, err := os.OpenFile(filepath.Join(path, "cgroup.kill"), os.O_WRONLY|syscall.O_CLOEXEC, 0); err == nil {
			r.kill = f
		}
		s.watch(ctx, r)
		n++
	}
	if n > 0 {
		logf("adopted %d run(s) whose guardian had died", n)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// ownedByUs reports whether process pid runs with our effective UID.
func ownedByUs(pid int) bool {
	var st unix.Stat_t
	if pid <= 0 || unix.Stat("/proc/"+strconv.Itoa(pid), &st) != nil {
		return false
	}
	return int(st.Uid) == os.Geteuid()
}

func (s *service) add(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active += n
	switch {
	case s.active > 0:
		s.timer.Stop()
	case s.closing:
		s.idleNow.Broadcast()
	default:
		s.timer.Reset(s.idle)
	}
}

// maybeExit stops the service if it is still idle. Under the start lock it
// removes our files and refuses new connections (shutdown of the listener:
// a connect then fails, and the owner waits for the lock we hold and starts
// another service). Connections queued before that are accepted and served,
// not reset by the close: an owner such as `create --owner-pid` sends its
// registration and exits, and could not send it again.
func (s *service) maybeExit() {
	// Never made again here: our directory may have been removed (a test's
	// temporary one), and then nobody else can be starting a service in it.
	sock := s.sockPath
	if sock == "" {
		sock = SocketPath()
	}
	unlock, err := takeLock(sock, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		unlock = func() {}
	case err != nil:
		return
	}
	defer unlock()
	s.mu.Lock()
	if s.active > 0 || s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.mu.Unlock()
	// Our files go first: once the listener is closed, Serve may return
	// and the process exit before another line of this runs.
	if b, err := os.ReadFile(pidPathOf(sock)); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		_ = os.Remove(pidPathOf(sock))
	}
	if s.sockPath != "" && s.sockIno != 0 && statSock(s.sockPath) == s.sockIno {
		_ = os.Remove(s.sockPath)
	}
	if rc, err := s.ln.SyscallConn(); err == nil {
		var queued []int
		_ = rc.Control(func(fd uintptr) {
			if unix.Shutdown(int(fd), unix.SHUT_RD) != nil {
				return
			}
			// The listener is non-blocking: EAGAIN once the queue is empty.
			for {
				nfd, _, err := unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
				if err != nil {
					break
				}
				queued = append(queued, nfd)
			}
		})
		for _, fd := range queued {
			f := os.NewFile(uintptr(fd), "guardian connection")
			c, err := net.FileConn(f)
			f.Close()
			if uc, ok := c.(*net.UnixConn); ok && err == nil {
				s.serve(s.ctx, uc)
			} else if c != nil {
				c.Close()
			}
		}
	}
	s.stop()
}

// stop closes the listener; Serve returns once nothing is active.
func (s *service) stop() {
	s.ln.SetUnlinkOnClose(false)
	s.ln.Close()
}

// statSock identifies a socket file: only ours is removed on exit.
func statSock(p string) uint64 {
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return 0
	}
	return st.Ino
}

// serveConn serves one owner's connection until EOF, then tears down the
// runs it registered for itself. If the owner's death is noticed first
// (notice_linux.go), the messages it sent are read to the end and its runs
// torn down then, without waiting for EOF.
func (s *service) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer s.add(-1)
	defer conn.Close()
	own := map[watchKey]*svcReg{}
	dying := "" // why, once the owner is dying: its runs go at once
	teardown := func(r *svcReg, why string) {
		s.add(1)
		go func() {
			defer s.add(-1)
			s.teardown(ctx, r, why)
		}()
	}
	handle := func(msg string, fds []int) {
		switch {
		case strings.HasPrefix(msg, "R "):
			r, err := parseReg(msg[2:], fds)
			if err != nil {
				logf("bad registration: %v", err)
				return
			}
			switch {
			case r.ownerGone:
				teardown(r, "owner exited while no service ran")
			case r.pidfd != nil && r.cgroup != "" && !exists(r.cgroup):
				// Killed before we read its registration: a Forget that
				// came first found nothing to forget.
				r.close()
			case r.pidfd != nil:
				s.watch(ctx, r)
			case dying != "":
				teardown(r, dying)
			default:
				key := watchKey{r.id, r.cgroup}
				if old := own[key]; old != nil {
					old.close()
				}
				own[key] = r
			}
		case strings.HasPrefix(msg, "U "):
			closeFDs(fds)
			id := msg[2:]
			// The owner tore the run down; another of its runs of
			// that ID (another parent) still stands.
			for k, r := range own {
				if k.id == id && !r.live() {
					r.close()
					delete(own, k)
				}
			}
			s.unwatch(id)
		default:
			closeFDs(fds)
		}
	}
	ownerDying := func(why string) {
		if dying == "" {
			dying = why
		}
		for k, r := range own {
			teardown(r, dying)
			delete(own, k)
		}
	}
	if d := noticeDeath(conn); d != nil {
		noticed := make(chan struct{})
		go func() {
			defer close(noticed)
			if d.Wait() {
				// Wakes the read below: the only deadline ever set here.
				_ = conn.SetReadDeadline(time.Unix(1, 0))
			}
		}()
		defer func() { d.Close(); <-noticed }()
	}
	buf := make([]byte, 8192)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The owner is dying. What it sent before (a "U" for a run
			// it tore down itself, a last registration) is read first.
			drain(conn, buf, oob, handle)
			ownerDying("owner died")
			_ = conn.SetReadDeadline(time.Time{})
			continue
		}
		fds := rights(oob[:oobn])
		if err != nil || n == 0 {
			closeFDs(fds)
			break // EOF: the owner is gone, or closed its connection
		}
		handle(string(buf[:n]), fds)
	}
	ownerDying("owner's connection closed")
}

// drain hands every message queued on conn to handle, without waiting.
func drain(conn *net.UnixConn, buf, oob []byte, handle func(string, []int)) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			fds := rights(oob[:oobn])
			if err != nil || n == 0 {
				closeFDs(fds)
				return
			}
			handle(string(buf[:n]), fds)
		}
	})
}

func parseReg(body string, fds []int) (*svcReg, error) {
	parts := strings.Split(body, "\x00")
	if len(parts) != 3 || !validFlags(parts[2]) || len(fds) != strings.Count(parts[2], "k")+strings.Count(parts[2], "p") {
		closeFDs(fds)
		return nil, fmt.Errorf("%q with %d fds", body, len(fds))
	}
	// The ID names the run's record and process markers, the path is
	// removed: both must name one run cgroup of that ID.
	if err := runid.Validate(parts[0]); err != nil {
		closeFDs(fds)
		return nil, err
	}
	if p := parts[1]; p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p || filepath.Base(p) != cgroup.Prefix+parts[0]) {
		closeFDs(fds)
		return nil, fmt.Errorf("%q is not the cgroup of run %s", p, parts[0])
	}
	r := &svcReg{id: parts[0], cgroup: parts[1]}
	for _, f := range parts[2] {
		switch f {
		case 'k':
			r.kill = os.NewFile(uintptr(fds[0]), "cgroup.kill")
			fds = fds[1:]
		case 'p':
			r.pidfd = reaper.PidfdFile(fds[0], "pidfd")
			fds = fds[1:]
		case 'g':
			r.ownerGone = true
		}
	}
	if r.ownerGone && r.pidfd != nil {
		r.close()
		return nil, fmt.Errorf("%q: both an owner pidfd and owner gone", body)
	}
	return r, nil
}

// validFlags: each of k (cgroup.kill), p (owner pidfd) and g (owner gone)
// at most once.
func validFlags(f string) bool {
	for i, c := range f {
		if !strings.ContainsRune("kpg", c) || strings.ContainsRune(f[i+1:], c) {
			return false
		}
	}
	return true
}

// peerAllowed reports whether conn's peer may register runs: a process of
// our UID, or root.
func peerAllowed(conn *net.UnixConn) (uid int, ok bool) {
	uid = -1
	withFD(conn, func(fd int) {
		if cr, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cr.Uid)
		}
	})
	return uid, uid == os.Geteuid() || uid == 0
}

func rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

func (r *svcReg) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.kill != nil {
		r.kill.Close()
	}
	if r.pidfd != nil {
		r.pidfd.Close()
	}
}

// watch tears r down when its owner's pidfd becomes readable (the owner
// exited).
func (s *service) watch(ctx context.Context, r *svcReg) {
	key := watchKey{r.id, r.cgroup}
	s.mu.Lock()
	if old := s.watched[key]; old != nil {
		old.close()
	}
	s.watched[key] = r
	s.mu.Unlock()
	s.add(1)
	go func() {
		defer s.add(-1)
		if !s.owners.exits(r.pidfd) {
			return // unregistered: closed under us
		}
		s.mu.Lock()
		if s.watched[key] == r {
			delete(s.watched, key)
		}
		s.mu.Unlock()
		s.teardown(ctx, r, "owner exited")
	}()
}

// watchKey names a watched run: by ID and cgroup, since runs of one ID
// under two parents are two runs (a registration of the second replaced
// the first, whose owner's death then left it running).
type watchKey struct{ id, cgroup string }

// A run whose cgroup is still the one it registered is not forgotten: the
// forget (`snakepit kill`, on a connection of its own) was for an earlier
// run of that ID, and arrived after this one's registration.
func (s *service) unwatch(id string) {
	var gone []*svcReg
	s.mu.Lock()
	for k, r := range s.watched {
		if k.id == id && !r.live() {
			delete(s.watched, k)
			gone = append(gone, r)
		}
	}
	s.mu.Unlock()
	for _, r := range gone {
		r.close()
	}
}

// live reports whether r's run cgroup still exists: its cgroup.kill is the
// file r holds.
func (r *svcReg) live() bool {
	if r.kill == nil {
		return false
	}
	held, err := r.kill.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(filepath.Join(r.cgroup, "cgroup.kill"))
	return err == nil && os.SameFile(held, now)
}

// teardown kills run r at once (the owner died: no grace) through the
// cgroup.kill it was given, waits until the cgroup is empty and removes it
// and the run's file record.
func (s *service) teardown(ctx context.Context, r *svcReg, why string) {
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	kill, pidfd := r.kill, r.pidfd
	r.mu.Unlock()
	if pidfd != nil {
		pidfd.Close()
	}
	t0 := time.Now()
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var err error
	if r.cgroup == "" {
		err = teardownPOSIX(tctx, r.id)
	} else {
		err = teardownCgroup(tctx, r.cgroup, kill)
	}
	if kill != nil {
		kill.Close()
	}
	if err != nil {
		logf("%s: tearing down [%s: error: %v]", why, r.id, err)
		return
	}
	logf("%s: tore down [%s: in %v]", why, r.id, time.Since(t0))
}

func teardownCgroup(ctx context.Context, path string, kill *os.File) error {
	cg := cgroup.At(path)
	write := func() error {
		if kill == nil {
			_, err := cg.Kill(ctx)
			return err
		}
		_, err := kill.Write([]byte("1"))
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w: %s", cgroup.ErrNotExist, path)
		}
		return err
	}
	// ErrNotExist: the owner tore the cgroup down before it died.
	if err := containment.KillAndRemove(ctx, cg, write); err != nil && !errors.Is(err, cgroup.ErrNotExist) {
		return err
	}
	if err := placement.ReleaseScope(ctx, path); err != nil {
		return err
	}
	return dropRecord(path)
}

// dropRecord removes the file record of a cgroup run, if it has one (no
// user xattrs on this cgroupfs).
func dropRecord(path string) error {
	id := strings.TrimPrefix(filepath.Base(path), cgroup.Prefix)
	if rec, err := record.Read(id); err == nil && rec.Mechanism == record.MechanismCgroup {
		return record.Remove(id)
	}
	return nil
}

func teardownPOSIX(ctx context.Context, id string) error {
	rec, err := record.Read(id)
	if errors.Is(err, record.ErrNoRecord) {
		return nil // torn down by its owner
	}
	if err != nil {
		return err
	}
	_, err = posix.TeardownRecord(ctx, rec, 0)
	return err
}
