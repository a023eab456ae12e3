//go:build linux

package jail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/spec"
)

// NotifySocketEnv is the sd_notify(3) variable a worker gets in notify
// mode.
const NotifySocketEnv = "NOTIFY_SOCKET"

// Ready tracks one worker's readiness.
type Ready struct {
	cfg   spec.Readiness
	re    *regexp.Regexp
	start time.Time
	ready chan struct{} // closed when every configured signal arrived
	// finished is closed once no more signals can arrive (the worker
	// exited and the socket was drained).
	finished chan struct{}

	mu        sync.Mutex
	gotNotify bool
	gotLine   bool
	info      spec.ReadyInfo
	isReady   bool

	// notify mode
	dir      string
	sockPath string
	sock     *os.File // nil when not in notify mode; waited on by the netpoller
	cgRel    string   // run cgroup, relative to the mount, for sender checks
	drainMu  sync.Mutex
	stopOnce sync.Once

	// line mode: our own copy of the caller's stdout file, which the
	// watcher writes to (closed once the worker's output is copied)
	dst *os.File
}

// NewReady prepares readiness for a worker that will run as uid:gid
// (-1: unchanged) in the run cgroup at cgPath ("" for none). In notify mode
// it makes a private directory (0700, owned by the worker's user) holding
// the worker's socket.
func NewReady(cfg spec.Readiness, cgPath string, uid, gid int) (*Ready, error) {
	rs := &Ready{cfg: cfg, ready: make(chan struct{}), finished: make(chan struct{}), start: time.Now()}
	if cfg.Line != "" {
		re, err := regexp.Compile(cfg.Line)
		if err != nil {
			return nil, fmt.Errorf("readiness line: %w", err)
		}
		rs.re = re
	}
	if !cfg.Notify {
		return rs, nil
	}
	if m, err := cgroup.FindMount(); err == nil && cgPath != "" {
		if rel, err := filepath.Rel(m.Path, cgPath); err == nil {
			rs.cgRel = "/" + rel
		}
	}
	if err := rs.listen(uid, gid); err != nil {
		rs.Cleanup()
		return nil, err
	}
	return rs, nil
}

func (rs *Ready) listen(uid, gid int) error {
	dir, err := os.MkdirTemp("", "snakepit-notify-")
	if err != nil {
		return fmt.Errorf("notify socket dir: %w", err)
	}
	rs.dir = dir
	rs.sockPath = filepath.Join(dir, "notify")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	// Non-blocking, so os.File hands it to the netpoller: no thread is
	// blocked per waiting worker.
	rs.sock = os.NewFile(uintptr(fd), rs.sockPath)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: rs.sockPath}); err != nil {
		return fmt.Errorf("notify socket: bind %s: %w", rs.sockPath, err)
	}
	// The kernel attaches the sender's credentials to each datagram.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fmt.Errorf("notify socket: SO_PASSCRED: %w", err)
	}
	if uid >= 0 {
		// Sending needs write access to the socket file and search access
		// to the directory.
		for _, p := range []string{dir, rs.sockPath} {
			if err := os.Lchown(p, uid, gid); err != nil {
				return fmt.Errorf("notify socket: %w", err)
			}
		}
	}
	return nil
}

// env returns the variables the worker gets (NOTIFY_SOCKET in notify mode).
func (rs *Ready) Env() []string {
	if rs.sock == nil {
		return nil
	}
	return []string{NotifySocketEnv + "=" + rs.sockPath}
}

// wrapStdout returns the writer the worker's stdout goes to: in line mode a
// writer that passes everything through to w and watches for the line.
func (rs *Ready) WrapStdout(w io.Writer) io.Writer {
	if rs.re == nil {
		return w
	}
	if w == nil {
		w = io.Discard
	}
	if f, ok := w.(*os.File); ok {
		// The caller may close its file once the worker has started, as
		// with any file given to os/exec; the watcher writes after that.
		if fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			rs.dst = os.NewFile(uintptr(fd), f.Name())
			w = rs.dst
		}
	}
	return &lineWatcher{dst: w, rs: rs}
}

// Started begins watching once the worker runs. The worker's owner calls
// Exited once it has exited: no goroutine per worker waits for that here.
func (rs *Ready) Started() {
	rs.mu.Lock()
	rs.checkReady()
	rs.mu.Unlock()
	if rs.sock != nil {
		go rs.readLoop()
	}
}

// Exited ends the watch after the worker exited (and was reaped): the
// notify reader stops after a last drain; without one, no more signals
// can come.
func (rs *Ready) Exited() {
	if rs.dst != nil {
		rs.dst.Close() // its output was copied (the waiter's Wait returned)
	}
	if rs.sock == nil {
		close(rs.finished)
		return
	}
	rs.stop()
}

// checkReady closes ready once all configured signals arrived; mu held.
func (rs *Ready) checkReady() {
	if rs.isReady {
		return
	}
	if (rs.cfg.Notify && !rs.gotNotify) || (rs.re != nil && !rs.gotLine) {
		return
	}
	rs.isReady = true
	if rs.info.At.IsZero() {
		rs.info.At = time.Now()
	}
	rs.info.After = rs.info.At.Sub(rs.start)
	close(rs.ready)
}

// readLoop handles datagrams until stop (or Cleanup) closes the socket.
func (rs *Ready) readLoop() {
	defer close(rs.finished)
	rc, err := rs.sock.SyscallConn()
	if err != nil {
		return
	}
	// The callback drains the socket and asks to wait for more; Read
	// returns once the socket is closed.
	_ = rc.Read(func(fd uintptr) bool {
		rs.drain(int(fd))
		return false
	})
}

// drain reads every queued datagram.
func (rs *Ready) drain(sock int) {
	rs.drainMu.Lock()
	defer rs.drainMu.Unlock()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // EAGAIN: empty
		}
		if !rs.senderInRun(oob[:oobn]) {
			continue
		}
		rs.handle(buf[:n])
	}
}

// senderInRun accepts a datagram only from a process of the run (the
// socket's directory already limits who can reach it to root and the
// worker's user). A sender that is already gone cannot be checked and is
// accepted.
func (rs *Ready) senderInRun(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) == 0 {
		return false
	}
	cred, err := unix.ParseUnixCredentials(&msgs[0])
	if err != nil {
		return false
	}
	path, err := cgroup.PathOf(int(cred.Pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
	}
	return rs.cgRel == "" || path == rs.cgRel || strings.HasPrefix(path, rs.cgRel+"/")
}

// handle parses one sd_notify datagram ("KEY=VALUE" lines).
func (rs *Ready) handle(msg []byte) {
	var statuses []string
	rs.mu.Lock()
	for _, line := range bytes.Split(msg, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "READY":
			if string(v) == "1" && !rs.gotNotify {
				rs.gotNotify = true
				rs.info.At = time.Now()
			}
		case "STATUS":
			rs.info.Status = string(v)
			statuses = append(statuses, string(v))
		}
	}
	rs.checkReady()
	rs.mu.Unlock()
	if rs.cfg.OnStatus != nil {
		for _, s := range statuses {
			rs.cfg.OnStatus(s)
		}
	}
}

// stop ends the notify reader after a last drain (what the worker sent just
// before it exited).
func (rs *Ready) stop() {
	rs.stopOnce.Do(func() {
		if rc, err := rs.sock.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { rs.drain(int(fd)) })
		}
		// Closing ends readLoop's Read. Both are done here, not when
		// readLoop ends: the owner may exit as soon as the worker is
		// reaped (snakepit run), before readLoop runs again.
		rs.Cleanup()
	})
}

// finish waits (bounded by ctx) until the notify socket is closed and its
// directory removed, after the worker exited. Teardown calls it so that
// nothing is left behind when it returns.
func (rs *Ready) Finish(ctx context.Context) {
	if rs == nil {
		return
	}
	select {
	case <-rs.finished:
	case <-ctx.Done():
	}
}

// cleanup closes the socket and removes its directory.
func (rs *Ready) Cleanup() {
	if rs.dst != nil {
		rs.dst.Close()
	}
	if rs.sock != nil {
		rs.sock.Close()
	}
	if rs.dir != "" {
		_ = os.RemoveAll(rs.dir)
	}
}

// lineWatcher passes a worker's stdout through and watches it, line by
// line, for the readiness pattern.
type lineWatcher struct {
	dst     io.Writer
	rs      *Ready
	mu      sync.Mutex
	buf     []byte
	long    bool // the line in buf is longer than maxReadyLine
	matched bool
}

// maxReadyLine bounds a line that is matched; a longer one never matches
// (its prefix might, where the whole would not). Matching costs the line's
// length times the pattern's size (spec.MaxReadyProg).
const maxReadyLine = 16 << 10

// keep adds b to the line being read.
func (l *lineWatcher) keep(b []byte) {
	if len(l.buf)+len(b) > maxReadyLine {
		l.long = true
		b = b[:max(0, maxReadyLine-len(l.buf))]
	}
	l.buf = append(l.buf, b...)
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	n, err := l.dst.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.matched {
		return n, err
	}
	rest := p[:n]
	for len(rest) > 0 && !l.matched {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			l.keep(rest)
			break
		}
		l.keep(rest[:i])
		rest = rest[i+1:]
		line, long := strings.TrimSuffix(string(l.buf), "\r"), l.long
		l.buf, l.long = l.buf[:0], false
		if !long && l.rs.re.MatchString(line) {
			l.matched = true
			l.buf = nil
			l.rs.mu.Lock()
			l.rs.gotLine = true
			l.rs.info.Line = line
			l.rs.info.At = time.Now()
			l.rs.checkReady()
			l.rs.mu.Unlock()
		}
	}
	return n, err
}

// Chan is closed when the worker is ready (at once when no readiness was
// configured).
func (rs *Ready) Chan() <-chan struct{} { return rs.ready }

// Info returns what the worker reported and whether it is ready.
func (rs *Ready) Info() (spec.ReadyInfo, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.info, rs.isReady
}

// Wait blocks until the worker is ready. It fails with ErrNotReady when
// the timeout (counted from the start) passes first, with
// ErrExitedBeforeReady when the worker exits first (exitStatus describes
// how), or with ctx's error. It tears nothing down: the caller decides.
func (rs *Ready) Wait(ctx context.Context, exitStatus func() string) (spec.ReadyInfo, error) {
	var timeout <-chan time.Time
	if d := time.Duration(rs.cfg.Timeout); d > 0 {
		t := time.NewTimer(time.Until(rs.start.Add(d)))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-rs.ready:
	case <-rs.finished:
		select {
		case <-rs.ready:
		default:
			return spec.ReadyInfo{}, fmt.Errorf("%w (%s; was waiting for %s)", ErrExitedBeforeReady, exitStatus(), rs.waitingFor())
		}
	case <-timeout:
		select {
		case <-rs.ready:
		default:
			return spec.ReadyInfo{}, fmt.Errorf("%w: not ready %v after start (waiting for %s)", ErrNotReady, time.Duration(rs.cfg.Timeout), rs.waitingFor())
		}
	case <-ctx.Done():
		return spec.ReadyInfo{}, ctx.Err()
	}
	info, _ := rs.Info()
	return info, nil
}

// waitingFor names the signals still missing.
func (rs *Ready) waitingFor() string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var w []string
	if rs.cfg.Notify && !rs.gotNotify {
		w = append(w, "READY=1 on "+NotifySocketEnv)
	}
	if rs.re != nil && !rs.gotLine {
		w = append(w, "a stdout line matching "+strconv.Quote(rs.cfg.Line))
	}
	if len(w) == 0 {
		return "nothing"
	}
	return strings.Join(w, " and ")
}
