//go:build linux

package guardian

import (
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"
	"github.com/snakepit/snakepit/reaper"
)

// An owner's death, noticed before its connection closes. The kernel
// closes a dead process's files only after it has torn down its address
// space (do_exit: exit_mm, then exit_files), which for a Go owner on a
// slow host takes a millisecond or more, and longer the more memory it
// has; a pidfd of the process is readable later still (exit_notify of its
// last thread). A PIDFD_THREAD pidfd (Linux 6.9) of one of the owner's
// other threads is readable as soon as that thread has exited, which in a
// group exit is at once. A thread may also end on its own, so a notice
// counts only once the whole process is seen dying (reaper.Dying);
// otherwise another thread is watched. The leader is never watched: the
// kernel reports it only when its whole group has exited. With no thread
// left to watch, the process's own pidfd is the notice; without
// PIDFD_THREAD, EOF on the connection (or that pidfd) is. Watched so:
// each owner connected to the service (serveConn), each owner of pidfd
// registrations, once however many runs it has (owners), and the exec'd
// guardian's owner (waitOwner).

// pidfdThread is PIDFD_THREAD: a pidfd of one thread rather than of its
// thread group.
const pidfdThread = unix.O_EXCL

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5; asm-generic, as on amd64 and
// arm64): a pidfd of the process at the other end of a unix socket.
const soPeerPidfd = 77

// threadPidfds reports whether the kernel has PIDFD_THREAD (probed once:
// older kernels refuse the flag with EINVAL).
var threadPidfds = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(unix.Gettid(), pidfdThread)
	if err != nil {
		return !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS)
	}
	unix.Close(fd)
	return true
})

// ThreadNotice reports whether owners' deaths are noticed at their
// threads' exits (PIDFD_THREAD) rather than when their connections close.
func ThreadNotice() bool { return threadPidfds() }

// watchThreads is how many of an owner's threads are watched at once: the
// one that frees the memory exits last, so one alone may be no sooner
// than EOF.
const watchThreads = 3

// deathNotice watches one owner process.
type deathNotice struct {
	pid   int
	proc  *os.File     // a pidfd of the owner itself; nil if the caller watches that
	tried map[int]bool // threads watched already
	exits chan int     // a watched thread has exited

	mu      sync.Mutex
	watched map[int]*os.File // thread -> its pidfd
	closed  bool
	done    chan struct{} // closed by Close
}

// noticeDeath starts watching the owner at the other end of conn: the
// process that connected, which may have died since. nil when the kernel
// cannot tell a thread's exit or the peer is unknown.
func noticeDeath(conn *net.UnixConn) *deathNotice {
	if !threadPidfds() {
		return nil
	}
	pidfd, err := -1, error(nil)
	withFD(conn, func(fd int) { pidfd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, soPeerPidfd) })
	if err != nil || pidfd < 0 {
		return nil
	}
	proc := reaper.PidfdFile(pidfd, "owner pidfd")
	pid := pidfdPID(pidfd)
	if pid == 0 {
		proc.Close()
		return nil
	}
	d := newDeathNotice(pid) // pid -1: reaped already; Wait says so at once
	d.proc = proc
	return d
}

// pidfdPID reads the PID a pidfd refers to from its fdinfo ("Pid:"); 0 if
// unknown, -1 once the process has been reaped.
func pidfdPID(fd int) int {
	var buf [512]byte
	n, err := kfile.Read("/proc/self/fdinfo/"+strconv.Itoa(fd), buf[:])
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0
			}
			return pid
		}
	}
	return 0
}

func newDeathNotice(pid int) *deathNotice {
	return &deathNotice{pid: pid, tried: map[int]bool{}, exits: make(chan int),
		watched: map[int]*os.File{}, done: make(chan struct{})}
}

// Wait returns true once the owner is dying, false once Close was called.
func (d *deathNotice) Wait() bool {
	if d.pid < 0 || (d.proc != nil && readable(d.proc)) {
		return true // dead before we looked
	}
	for {
		if d.arm() == 0 {
			// No thread but the leader: the group may be exiting (the
			// leader last), or have one thread; else its exit tells.
			if reaper.Dying(d.pid) {
				return true
			}
			if d.proc == nil {
				<-d.done
				return false
			}
			return reaper.WaitPidfd(d.proc)
		}
		select {
		case tid := <-d.exits:
			d.drop(tid)
			if reaper.Dying(d.pid) {
				return true
			}
			// That thread ended on its own (or the process is
			// mid-exec): watch another.
		case <-d.done:
			return false
		}
	}
}

// readable polls a pidfd once: true if its process has exited.
func readable(f *os.File) bool {
	exited := false
	withFD(f, func(fd int) { exited = reaper.PidfdExited(fd, 0) })
	return exited
}

// withFD runs f with the descriptor behind c (not at all if c is closed).
func withFD(c syscall.Conn, f func(fd int)) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { f(int(fd)) })
	}
}

// arm watches threads of the owner not watched before, other than its
// leader, the oldest first (a Go program's first threads are the
// runtime's, kept for good), until watchThreads are watched. It returns
// how many are.
func (d *deathNotice) arm() int {
	d.mu.Lock()
	n := len(d.watched)
	d.mu.Unlock()
	if n >= watchThreads {
		return n
	}
	dir := "/proc/" + strconv.Itoa(d.pid) + "/task"
	df, err := os.Open(dir)
	if err != nil {
		return n
	}
	names, _ := df.Readdirnames(-1)
	df.Close()
	var tids []int
	for _, name := range names {
		if tid, err := strconv.Atoi(name); err == nil && tid != d.pid && !d.tried[tid] {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	for _, tid := range tids {
		if n >= watchThreads {
			break
		}
		d.tried[tid] = true
		fd, err := unix.PidfdOpen(tid, pidfdThread|unix.PIDFD_NONBLOCK)
		if err != nil {
			continue
		}
		// A thread ID reused by another process since the listing is
		// harmless (its exit finds the owner not dying); checking that
		// it is still the owner's keeps it rare.
		if _, err := os.Stat(dir + "/" + strconv.Itoa(tid)); err != nil {
			unix.Close(fd)
			continue
		}
		f := os.NewFile(uintptr(fd), "thread pidfd")
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			f.Close()
			return 0
		}
		d.watched[tid] = f
		n = len(d.watched)
		d.mu.Unlock()
		go func() {
			if reaper.WaitPidfd(f) {
				select {
				case d.exits <- tid:
				case <-d.done:
				}
			}
		}()
	}
	return n
}

// drop stops watching a thread that has exited.
func (d *deathNotice) drop(tid int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f := d.watched[tid]; f != nil {
		f.Close()
		delete(d.watched, tid)
	}
}

// Close ends the watch; a Wait in progress returns false.
func (d *deathNotice) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	close(d.done)
	for _, f := range d.watched {
		f.Close()
	}
	if d.proc != nil {
		d.proc.Close()
	}
}

// owners are the death notices of owners that registered runs with a
// pidfd (create --owner-pid), one per owner however many runs it has: a
// BEAM owning a hundred runs is watched through three thread pidfds, and
// its death costs one reaper.Dying scan of its threads, not a hundred.
type owners struct {
	mu sync.Mutex
	m  map[int]*ownerNotice // by PID
}

type ownerNotice struct {
	refs  int
	d     *deathNotice
	dying chan struct{} // closed once the owner is seen dying
}

// exits blocks until the owner that pidfd f refers to is dying (true), or
// f is closed under it (false): whichever of its thread notice and its
// exit comes first.
func (o *owners) exits(f *os.File) bool {
	dying, release := o.notice(f)
	defer release()
	exited := make(chan bool, 1)
	// Ends when f is closed (the caller's, at teardown or unregistration).
	go func() { exited <- reaper.WaitPidfd(f) }()
	select {
	case ok := <-exited:
		return ok
	case <-dying:
		return true
	}
}

// notice joins (or starts) the death notice of f's process; dying is nil
// when the kernel cannot tell a thread's exit. Its PID is the owner's for
// as long as the owner lives, which is all that matters: a dying process
// under a reused PID means the owner is gone too. A notice leaves the map
// once it has fired, so a later owner under that PID gets its own.
func (o *owners) notice(f *os.File) (dying <-chan struct{}, release func()) {
	if !threadPidfds() {
		return nil, func() {}
	}
	pid := 0
	withFD(f, func(fd int) { pid = pidfdPID(fd) })
	if pid <= 0 {
		return nil, func() {}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[int]*ownerNotice{}
	}
	n := o.m[pid]
	if n == nil {
		n = &ownerNotice{d: newDeathNotice(pid), dying: make(chan struct{})}
		o.m[pid] = n
		go func() {
			if n.d.Wait() {
				o.forget(pid, n)
				close(n.dying)
			}
		}()
	}
	n.refs++
	return n.dying, func() {
		o.mu.Lock()
		n.refs--
		last := n.refs == 0
		if last && o.m[pid] == n {
			delete(o.m, pid)
		}
		o.mu.Unlock()
		if last {
			n.d.Close()
		}
	}
}

func (o *owners) forget(pid int, n *ownerNotice) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m[pid] == n {
		delete(o.m, pid)
	}
}
