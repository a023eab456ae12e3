//go:build linux

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/api"
)

// peer is the credentials of a connection's other end at connect(2) time.
type peer struct {
	uid, gid, pid int
	groups        []int // supplementary groups (SO_PEERGROUPS)
	err           error // credentials could not be read: treated as nobody
}

type role int

const (
	roleNone  role = iota // 403 for everything
	roleUser              // may create runs, manage its own
	roleAdmin             // root: anything
)

func (p peer) inGroup(gid int) bool {
	return gid > 0 && (p.gid == gid || slices.Contains(p.groups, gid))
}

// peerOf reads the peer credentials of a unix connection.
func peerOf(c *net.UnixConn) peer {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var p peer
	cerr := rc.Control(func(fd uintptr) {
		uc, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.uid, p.gid, p.pid = int(uc.Uid), int(uc.Gid), int(uc.Pid)
		p.groups, err = peerGroups(int(fd))
		if err != nil {
			p.err = fmt.Errorf("SO_PEERGROUPS: %w", err)
		}
	})
	if cerr != nil {
		return peer{err: cerr}
	}
	return p
}

// peerGroups returns SO_PEERGROUPS (Linux >= 4.13), growing the buffer on
// ERANGE. unix.GetsockoptString cannot be used: it cuts binary data at the
// first NUL byte.
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 32)
	for {
		l := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == unix.ERANGE && int(l) > len(buf)*4 {
			buf = make([]uint32, l/4+1)
			continue
		}
		if e != 0 {
			return nil, e
		}
		out := make([]int, l/4)
		for i := range out {
			out[i] = int(buf[i])
		}
		return out, nil
	}
}

// peerConn is an accepted connection with its peer's credentials.
type peerConn struct {
	*net.UnixConn
	peer peer
	once sync.Once
	done func()
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.done)
	return err
}

// peerListener reads each connection's credentials at accept and bounds
// the open connections: maxConns in all, of which a member's UID may hold
// perUID, and members together all but rootConns, which stay free for
// root. A connection over its share is answered 503 at once and closed.
type peerListener struct {
	*net.UnixListener
	maxConns, perUID, rootConns int

	mu     sync.Mutex
	total  int
	others int         // connections of UIDs other than root
	byUID  map[int]int // open connections per non-root UID
}

func newPeerListener(l *net.UnixListener, maxConns, perUID, rootConns int) *peerListener {
	return &peerListener{UnixListener: l, maxConns: maxConns, perUID: perUID, rootConns: rootConns, byUID: make(map[int]int)}
}

// connKey is the UID a connection counts against; -1 for a peer whose
// credentials could not be read.
func connKey(p peer) int {
	if p.err != nil {
		return -1
	}
	return p.uid
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p := peerOf(c)
		key := connKey(p)
		if why := l.admit(key); why != "" {
			refuse(c, why)
			continue
		}
		return &peerConn{UnixConn: c, peer: p, done: func() { l.release(key) }}, nil
	}
}

// admit takes a slot for key, or says why there is none.
func (l *peerListener) admit(key int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.maxConns:
		return fmt.Sprintf("too many connections (limit %d)", l.maxConns)
	case key != 0 && l.byUID[key] >= l.perUID:
		return fmt.Sprintf("too many connections from uid %d (limit %d per uid)", key, l.perUID)
	case key != 0 && l.others >= l.maxConns-l.rootConns:
		return fmt.Sprintf("too many connections from non-root users (limit %d)", l.maxConns-l.rootConns)
	}
	l.total++
	if key != 0 {
		l.others++
		l.byUID[key]++
	}
	return ""
}

func (l *peerListener) release(key int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if key != 0 {
		l.others--
		if l.byUID[key]--; l.byUID[key] <= 0 {
			delete(l.byUID, key)
		}
	}
}

// refuse answers a connection over its share with a 503 and closes it.
// One non-blocking write, which a fresh connection's socket buffer takes
// whole; should it not, the connection is closed all the same. The accept
// loop never waits on it.
func refuse(c *net.UnixConn, why string) {
	body, _ := json.Marshal(api.Error{Error: why, Code: api.CodeLimit})
	msg := fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n", len(body)+1, body)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Write(func(fd uintptr) bool {
			_, _ = unix.Write(int(fd), msg)
			return true
		})
	}
	_ = c.Close()
}

// ErrNotFile is returned for a stdout or stderr that is neither a regular
// file nor a character device (a FIFO, a socket, a directory): writing to
// one could block the worker, and opening one the daemon.
var ErrNotFile = errors.New("not a regular file or character device")

// openWait bounds how long a request waits for the open of a caller's
// file (a path on a hung network or FUSE mount blocks in open whatever
// the flags); the open itself then finishes on its own thread, and what it
// opened is closed.
const openWait = 5 * time.Second

// openAs opens path (O_WRONLY|O_CREATE|O_APPEND, mode 0644) with the
// peer's filesystem credentials, so that a client can only name files it
// could open itself. It opens with O_NONBLOCK (a FIFO without a reader
// would otherwise block the thread for ever) and refuses anything but a
// regular file or a character device (ErrNotFile); the worker gets the
// descriptor back in blocking mode. setfsuid/setfsgid/setgroups act on
// the calling thread only (raw syscalls), so a member's open runs on a
// dedicated locked thread that is never unlocked: the runtime then
// terminates the thread instead of reusing it with foreign credentials.
//
// An open that does not answer keeps its thread until it does: a UID may
// have maxOpensPerUID of those at once, and is refused more
// (ErrTooManyOpens), so that no UID can pile up threads.
func (d *Daemon) openAs(ctx context.Context, p peer, path string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	if !d.takeOpen(p.uid) {
		return nil, fmt.Errorf("open %s: %w (%d at once)", path, ErrTooManyOpens, maxOpensPerUID)
	}
	rc := make(chan result, 1)
	go func() {
		defer d.releaseOpen(p.uid)
		if p.uid != 0 {
			runtime.LockOSThread()
			// No UnlockOSThread: see above.
			if err := becomePeer(p); err != nil {
				rc <- result{err: err}
				return
			}
		}
		f, err := openOutput(path)
		rc <- result{f, err}
	}()
	t := time.NewTimer(openWait)
	defer t.Stop()
	select {
	case r := <-rc:
		return r.f, r.err
	case <-ctx.Done():
	case <-t.C:
	}
	go func() {
		if r := <-rc; r.f != nil {
			r.f.Close()
		}
	}()
	return nil, fmt.Errorf("open %s: no answer within %v", path, openWait)
}

// maxOpensPerUID bounds a UID's opens of stdout/stderr files in progress,
// those that did not answer within openWait included.
const maxOpensPerUID = 8

// ErrTooManyOpens: the UID has maxOpensPerUID opens in progress.
var ErrTooManyOpens = errors.New("too many opens of output files in progress")

func (d *Daemon) takeOpen(uid int) bool {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	if d.opens == nil {
		d.opens = make(map[int]int)
	}
	if d.opens[uid] >= maxOpensPerUID {
		return false
	}
	d.opens[uid]++
	return true
}

func (d *Daemon) releaseOpen(uid int) {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	if d.opens[uid]--; d.opens[uid] == 0 {
		delete(d.opens, uid)
	}
}

// becomePeer gives the calling (locked) thread p's filesystem credentials.
func becomePeer(p peer) error {
	groups := p.groups
	if groups == nil {
		groups = []int{}
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	_ = unix.Setfsgid(p.gid)
	_ = unix.Setfsuid(p.uid)
	// setfs[ug]id report no errors; read the values back.
	if cur, _ := unix.SetfsuidRetUid(-1); cur != p.uid {
		return errors.New("setfsuid failed")
	}
	if cur, _ := unix.SetfsgidRetGid(-1); cur != p.gid {
		return errors.New("setfsgid failed")
	}
	return nil
}

// copyable reports whether the daemon may write to f itself (readiness by
// line): a regular file, or /dev/null. A terminal or another device may
// block the write for ever.
func copyable(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return true
	case unix.S_IFCHR:
		return unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 // /dev/null
	}
	return false
}

// openOutput opens a worker's output file without ever blocking on it.
// The raw syscalls keep the descriptor away from the runtime's poller.
func openOutput(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_APPEND|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFCHR {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, ErrNotFile)
	}
	// Blocking again for the worker, which shares the open file
	// description.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
