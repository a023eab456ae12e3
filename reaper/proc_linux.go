//go:build linux

package reaper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"
)

// Sentinel errors of process identity checks.
var (
	// ErrNoProcess means the process does not exist (any more).
	ErrNoProcess = errors.New("no such process")
	// ErrReused means the PID now belongs to another process than the one
	// recorded: its start time differs.
	ErrReused = errors.New("PID reused by another process")
)

// Stat is the part of /proc/PID/stat snakepit uses.
type Stat struct {
	PID     int
	Comm    string
	State   byte // R, S, D, Z, T, X, ...
	PPID    int
	PGID    int
	Session int
	// Flags is field 9, the kernel's PF_* flags.
	Flags uint64
	// Start is field 22, the process start time in clock ticks after boot.
	// PID plus Start identifies a process for the lifetime of a boot.
	Start uint64
	// Pending is field 31: the signals (1-31) queued to this task itself.
	Pending uint64
}

// Dead reports whether the process has exited (zombie or dead) and only
// waits to be reaped.
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' }

// pfExiting is PF_EXITING from include/linux/sched.h.
const pfExiting = 0x4

// Exiting reports whether the process is dead or already inside exit(2)
// (PF_EXITING): it will be gone without anyone's help.
func (s Stat) Exiting() bool { return s.Dead() || s.Flags&pfExiting != 0 }

// ReadStat reads /proc/PID/stat. A process that does not exist yields an
// error wrapping ErrNoProcess.
func ReadStat(pid int) (Stat, error) {
	if pid <= 0 {
		return Stat{}, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	var buf [1024]byte
	n, err := readProcFile(pid, "stat", buf[:])
	if err != nil {
		return Stat{}, err
	}
	st, err := ParseStat(buf[:n])
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// StartTime returns the start time (field 22 of /proc/PID/stat) of pid.
func StartTime(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	return st.Start, err
}

// ParseStat parses the contents of /proc/PID/stat. The command name is
// parenthesised and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	cl := bytes.LastIndexByte(b, ')')
	if open < 0 || cl < open {
		return Stat{}, errors.New("malformed stat: no (comm)")
	}
	var s Stat
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return Stat{}, fmt.Errorf("malformed stat: pid: %w", err)
	}
	s.PID = pid
	s.Comm = string(b[open+1 : cl])
	f := bytes.Fields(b[cl+1:])
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, errors.New("malformed stat: too few fields")
	}
	s.State = f[0][0]
	ints := [...]*int{&s.PPID, &s.PGID, &s.Session}
	for i, p := range ints {
		if *p, err = strconv.Atoi(string(f[1+i])); err != nil {
			return Stat{}, fmt.Errorf("malformed stat: field %d: %w", 4+i, err)
		}
	}
	if s.Flags, err = strconv.ParseUint(string(f[6]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("malformed stat: flags: %w", err)
	}
	if s.Start, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("malformed stat: starttime: %w", err)
	}
	if len(f) > 28 {
		s.Pending, _ = strconv.ParseUint(string(f[28]), 10, 64)
	}
	return s, nil
}

// Dying reports whether process pid is on its way out as a whole: it is
// gone, was sent SIGKILL, or every thread of it is dead, inside exit(2),
// or has SIGKILL queued. A fatal signal and exit_group(2) queue SIGKILL to
// every thread of the group; a thread that ends on its own, or the other
// threads of an exec, leave a thread that is none of these.
//
// A scan of /proc is no snapshot: one stalled between its reads can take
// an exec from a thread other than the leader (which kills all the others)
// for a death. So the threads are scanned twice: the second scan meets
// the exec finished or still under way, both of which read alive. A
// SIGKILL sent to the process needs no scan.
func Dying(pid int) bool {
	if killed(pid) {
		return true
	}
	for range 2 {
		if !threadsScanDying(pid) {
			return false
		}
	}
	return true
}

// threadsScanDying is one scan of Dying's.
func threadsScanDying(pid int) bool {
	var gone bool
	list := func() ([]string, error) {
		d, err := os.Open("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			gone = errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
			return nil, err
		}
		defer d.Close()
		return d.Readdirnames(-1)
	}
	var buf [1024]byte
	dead := threadsDying(pid, list, func(tid string) (Stat, error) {
		n, err := readProcFile(pid, "task/"+tid+"/stat", buf[:])
		if err != nil {
			return Stat{}, err
		}
		return ParseStat(buf[:n])
	})
	return dead || gone
}

// threadsDying is Dying's scan of the threads of pid: listed by list, read
// by stat. The list is read again until it names no thread not yet read: a
// thread made after a reading of it (one that then execs, and so kills all
// the others) would otherwise go unseen, and the process read as dying.
// Only a live thread can make one, and it is read before the last list.
func threadsDying(pid int, list func() ([]string, error), stat func(tid string) (Stat, error)) bool {
	seen := map[string]bool{}
	leaderRead := false
	for {
		tids, err := list()
		if err != nil {
			return false
		}
		fresh := false
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid], fresh = true, true
			st, err := stat(tid)
			if errors.Is(err, ErrNoProcess) {
				continue // that thread is gone
			}
			if err != nil || !dying(st) {
				return false
			}
		}
		if fresh {
			leaderRead = false
			continue
		}
		if leaderRead {
			return true // no thread made since the leader was read dying
		}
		// An exec from a thread other than the leader looks like a death
		// for a moment; after it the leader's PID names a live thread. The
		// list is read once more after this: a later exec's threads, made
		// before this read, must not go unseen.
		if st, err := stat(strconv.Itoa(pid)); err == nil && !dying(st) {
			return false
		}
		leaderRead = true
	}
}

// dying: the thread is dead, inside exit(2), or has SIGKILL queued.
func dying(st Stat) bool { return st.Exiting() || st.Pending&(1<<(unix.SIGKILL-1)) != 0 }

// killed reports whether process pid was sent SIGKILL as a whole (kill(2),
// pidfd_send_signal): that stays in its shared pending set, ShdPnd in
// /proc/PID/status, until it is reaped. One read, where the scan of its
// threads in Dying reads a file per thread while they exit (0.25-0.7 ms for
// a Go owner here).
func killed(pid int) bool {
	var buf [4096]byte
	n, err := readProcFile(pid, "status", buf[:])
	if err != nil {
		return false
	}
	const key = "\nShdPnd:\t"
	i := bytes.Index(buf[:n], []byte(key))
	if i < 0 {
		return false // cut off by a long Groups line: the scan decides
	}
	v := buf[i+len(key) : n]
	if j := bytes.IndexByte(v, '\n'); j >= 0 {
		v = v[:j]
	}
	set, err := strconv.ParseUint(string(v), 16, 64)
	return err == nil && set&(1<<(unix.SIGKILL-1)) != 0
}

// readProcFile reads /proc/PID/name into buf with one read (enough for stat;
// callers needing whole files use kfile.ReadAll).
func readProcFile(pid int, name string, buf []byte) (int, error) {
	n, err := kfile.Read("/proc/"+strconv.Itoa(pid)+"/"+name, buf)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return 0, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	return n, err
}

// Identity names one process for the lifetime of a boot: a PID alone can be
// reused, PID plus start time cannot.
type Identity struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// IdentityOf reads the identity of a running process.
func IdentityOf(pid int) (Identity, error) {
	st, err := ReadStat(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: st.Start}, nil
}

// pidfdBroken is set once pidfd_open failed with ENOSYS (Linux < 5.3).
var pidfdBroken atomic.Bool

// PidFDSupported reports whether pidfd_open works (it has not failed with
// ENOSYS in this process).
func PidFDSupported() bool { return !pidfdBroken.Load() }

// Pinned is a process whose identity was verified after a pidfd to it was
// opened: every signal goes through the pidfd, so it can never reach a
// process that later got the same PID. On kernels without pidfd_open
// (ENOSYS) the identity is re-verified from /proc before every signal
// instead, which narrows the window to microseconds but cannot close it.
type Pinned struct {
	Identity
	fd int // -1 without pidfd support
}

// Pin opens a pidfd to id.PID and then checks that the process behind it
// still has id.Start. It fails with ErrNoProcess when the process is gone
// and ErrReused when the PID belongs to someone else now.
func Pin(id Identity) (*Pinned, error) {
	fd := -1
	if !pidfdBroken.Load() {
		var err error
		fd, err = unix.PidfdOpen(id.PID, 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOSYS):
			pidfdBroken.Store(true)
			fd = -1
		case errors.Is(err, unix.ESRCH):
			return nil, fmt.Errorf("%w: pid %d", ErrNoProcess, id.PID)
		default:
			return nil, fmt.Errorf("pidfd_open %d: %w", id.PID, err)
		}
	}
	// The pidfd now refers to whatever process has the PID. Only if that
	// process has the recorded start time is it the one we meant.
	if err := verify(id); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, err
	}
	return &Pinned{Identity: id, fd: fd}, nil
}

func verify(id Identity) error {
	st, err := ReadStat(id.PID)
	if err != nil {
		return err
	}
	if st.Start != id.Start {
		return fmt.Errorf("%w: pid %d started at tick %d, recorded %d", ErrReused, id.PID, st.Start, id.Start)
	}
	return nil
}

// FD returns the pidfd, or -1 when the kernel has none.
func (p *Pinned) FD() int { return p.fd }

// Signal sends sig through the pidfd. A process that has exited yields
// ErrNoProcess (never a signal to a successor with the same PID).
func (p *Pinned) Signal(sig syscall.Signal) error {
	if p.fd >= 0 {
		err := unix.PidfdSendSignal(p.fd, sig, nil, 0)
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("%w: pid %d", ErrNoProcess, p.PID)
		}
		return err
	}
	if p.fd == -2 {
		return fmt.Errorf("signal pid %d: %w", p.PID, os.ErrClosed)
	}
	if err := verify(p.Identity); err != nil {
		return err
	}
	err := unix.Kill(p.PID, sig)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("%w: pid %d", ErrNoProcess, p.PID)
	}
	return err
}

// Exited reports whether the process has exited (it may still be a zombie
// awaiting its parent's wait).
func (p *Pinned) Exited() bool {
	if p.fd >= 0 {
		return PidfdExited(p.fd, 0)
	}
	st, err := ReadStat(p.PID)
	return err != nil || st.Start != p.Start || st.Dead()
}

// PidfdFile makes fd, a pidfd, a file that the runtime's poller waits on
// (WaitPidfd): os.NewFile polls only a non-blocking descriptor, and a
// blocking wait holds an OS thread for each process waited for. The file
// owns fd.
func PidfdFile(fd int, name string) *os.File {
	_ = unix.SetNonblock(fd, true)
	return os.NewFile(uintptr(fd), name)
}

// WaitPidfd blocks until the process behind f (made by PidfdFile) has
// exited (true) or f is closed (false). It waits in the runtime's poller,
// holding no OS thread; on a kernel that cannot poll a pidfd it blocks a
// thread in poll(2).
func WaitPidfd(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		exited = PidfdExited(int(fd), 0)
		return exited
	})
	if err == nil || exited {
		return exited
	}
	for {
		fd := -1
		_ = rc.Control(func(u uintptr) { fd = int(u) })
		if fd < 0 {
			return false
		}
		if PidfdExited(fd, time.Second) {
			return true
		}
	}
}

// PidfdExited waits up to timeout (0: only looks) for the process behind
// pidfd fd to exit, and reports whether it has. A signal that interrupts
// the poll, such as the runtime's preemption signal, is no answer: it
// polls again for what is left of the timeout (rounded up to poll(2)'s
// milliseconds, so never less than asked).
func PidfdExited(fd int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ms := max(int((time.Until(deadline)+time.Millisecond-1)/time.Millisecond), 0)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		switch {
		case err == nil:
			return n > 0
		case !errors.Is(err, unix.EINTR):
			return false
		}
	}
}

// Dying reports whether the process has exited or is already inside
// exit(2) (PF_EXITING): it will be gone without a signal from us.
func (p *Pinned) Dying() bool {
	if p.Exited() {
		return true
	}
	st, err := ReadStat(p.PID)
	return err != nil || st.Start != p.Start || st.Exiting()
}

// Close releases the pidfd. It is idempotent.
func (p *Pinned) Close() error {
	if p == nil || p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -2
	return err
}

// WaitExited blocks until every process in ps has exited or ctx ends, and
// returns those still alive. With pidfds it sleeps in poll(2) on all of them;
// without, it re-reads /proc every 5 ms (the kernel offers no notification
// for non-children there).
func WaitExited(ctx context.Context, ps []*Pinned) []*Pinned {
	alive := append([]*Pinned(nil), ps...)
	for {
		alive = stillAlive(alive)
		if len(alive) == 0 || ctx.Err() != nil {
			return alive
		}
		timeout := 5
		var pfds []unix.PollFd
		for _, p := range alive {
			if p.fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN})
			}
		}
		if len(pfds) == len(alive) {
			timeout = 100 // only bounds how late we notice ctx ending
		}
		if dl, ok := ctx.Deadline(); ok {
			if ms := int(time.Until(dl)/time.Millisecond) + 1; ms < timeout {
				timeout = max(ms, 0) // a passed deadline must not become poll's -1 (forever)
			}
		}
		if _, err := unix.Poll(pfds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return alive
		}
	}
}

func stillAlive(ps []*Pinned) []*Pinned {
	out := ps[:0]
	for _, p := range ps {
		if !p.Exited() {
			out = append(out, p)
		}
	}
	return out
}
