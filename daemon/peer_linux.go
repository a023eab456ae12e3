//go:build linux

package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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
// the number of open connections.
type peerListener struct {
	*net.UnixListener
	slots chan struct{}
	quit  chan struct{}
	qonce sync.Once
}

func newPeerListener(l *net.UnixListener, maxConns int) *peerListener {
	return &peerListener{UnixListener: l, slots: make(chan struct{}, maxConns), quit: make(chan struct{})}
}

func (l *peerListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.quit:
		return nil, net.ErrClosed
	}
	c, err := l.AcceptUnix()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &peerConn{UnixConn: c, peer: peerOf(c), done: func() { <-l.slots }}, nil
}

func (l *peerListener) Close() error {
	l.qonce.Do(func() { close(l.quit) })
	return l.UnixListener.Close()
}

// openAs opens path (O_WRONLY|O_CREATE|O_APPEND, mode 0644) with the
// peer's filesystem credentials, so that a client can only name files it
// could open itself. setfsuid/setfsgid/setgroups act on the calling thread
// only (raw syscalls), so the open runs on a dedicated locked thread that
// is never unlocked: the runtime then terminates the thread instead of
// reusing it with foreign credentials.
func openAs(p peer, path string) (*os.File, error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND | syscall.O_NOCTTY
	if p.uid == 0 {
		return os.OpenFile(path, flags, 0o644)
	}
	type result struct {
		f   *os.File
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		groups := p.groups
		if groups == nil {
			groups = []int{}
		}
		if err := unix.Setgroups(groups); err != nil {
			rc <- result{err: fmt.Errorf("setgroups: %w", err)}
			return
		}
		_ = unix.Setfsgid(p.gid)
		_ = unix.Setfsuid(p.uid)
		// setfs[ug]id report no errors; read the values back.
		if cur, _ := unix.SetfsuidRetUid(-1); cur != p.uid {
			rc <- result{err: errors.New("setfsuid failed")}
			return
		}
		if cur, _ := unix.SetfsgidRetGid(-1); cur != p.gid {
			rc <- result{err: errors.New("setfsgid failed")}
			return
		}
		f, err := os.OpenFile(path, flags, 0o644)
		rc <- result{f, err}
	}()
	r := <-rc
	return r.f, r.err
}
