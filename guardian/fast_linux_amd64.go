//go:build linux && amd64

package guardian

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// fastGuardArgs is everything the in-process guardian reads. Its layout is
// fixed: guardian_fast_linux_amd64.s addresses the fields by offset
// (TestFastGuardArgsLayout checks them).
type fastGuardArgs struct {
	pipeFD      int64       // 0: read end; EOF once the owner is gone
	killFD      int64       // 8: the run's cgroup.kill, open for writing
	nullFD      int64       // 16: /dev/null, becomes fds 0-2
	eventsFD    int64       // 24: the run's cgroup.events
	nRanges     int64       // 32
	ranges      [6][2]int64 // 40: close_range(lo, hi) calls
	path        uintptr     // 136: execve path (NUL-terminated)
	argv        uintptr     // 144: execve argv (NULL-terminated)
	envp        uintptr     // 152: execve envp (NULL-terminated)
	argvRemoved uintptr     // 160: argv when the child removed the run
	cgPath      uintptr     // 168: the run cgroup's path, for rmdir
	comm        [16]byte    // 176: PR_SET_NAME
	scratch     [8]byte     // 192: read(2) buffer
	one         [8]byte     // 200: "1" for cgroup.kill
	mask        uint64      // 208: the empty signal set
	pollFD      int32       // 216: struct pollfd on cgroup.events
	pollEvents  int16       // 220
	_           int16       // 222: revents, written by the kernel
	evbuf       [16]byte    // 224: cgroup.events as read
}

// fastGuardClone is in guardian_fast_linux_amd64.s.
func fastGuardClone(args *fastGuardArgs, stack uintptr) (pid int, errno uintptr)

// fastGuard is what the child shares with us (CLONE_VM): it lives in static
// memory that nothing ever frees or moves, for the life of the process.
var fastGuard struct {
	mu    sync.Mutex
	used  bool
	args  fastGuardArgs
	stack [1024]byte
	// keep holds the execve strings and pointer arrays the args point into,
	// so the garbage collector never frees them.
	keep []any
	// pipeW is the write end of the owner pipe, held until we exit.
	pipeW int
}

// FastName is the command name (comm) of the in-process guardian
// until it execs the full guardian.
const FastName = "snakepit-guard"

// ErrNoFast means the in-process guardian cannot be used here (no
// cgroup.kill, a second run in this process, no reaper, or an owner other
// than the caller); Start's exec'd guardian does the job instead.
var ErrNoFast = errors.New("in-process guardian unavailable")

// StartFast starts the guardian of a run in cgroup mode without
// starting a program: a clone(CLONE_VM) of the calling process that runs a
// few raw system calls (guardian_fast_linux_amd64.s). It costs one clone,
// against a fork, an exec and a Go runtime start for Start's.
//
// The guardian blocks in read(2) on a pipe whose only write end the caller
// holds, so it wakes when the caller is gone however it died. It then writes
// cgroup.kill of the run at once; if the run's cgroup was already removed
// (the caller tore it down and exited), it just exits. Otherwise it execs
// the full guardian (`snakepit __guardian`, with o's arguments), which finds
// its owner dead and finishes the teardown: waits until the run is empty,
// removes it and its records. It keeps nothing of the caller's open: its
// stdio is /dev/null and every other descriptor is closed; it runs in its
// own session with every signal blocked, and outside the run cgroup.
//
// The caller must be the owner (o.Owner zero or itself) and must have a
// Reaper: the guardian is its child. One per process.
func StartFast(ctx context.Context, o Options, cgroupPath string) (reaper.Identity, error) {
	if err := ctx.Err(); err != nil {
		return reaper.Identity{}, err
	}
	if o.Reaper == nil || (o.Owner.PID != 0 && o.Owner.PID != os.Getpid()) || cgroupPath == "" {
		return reaper.Identity{}, ErrNoFast
	}
	if err := FastAvailable(); err != nil {
		// The child could not drop the caller's descriptors.
		return reaper.Identity{}, err
	}
	fastGuard.mu.Lock()
	defer fastGuard.mu.Unlock()
	if fastGuard.used {
		return reaper.Identity{}, ErrNoFast
	}
	if o.Owner.PID == 0 {
		self, err := record.Self()
		if err != nil {
			return reaper.Identity{}, err
		}
		o.Owner = self
	}
	exe := o.Binary
	if exe == "" {
		e, err := os.Executable()
		if err != nil {
			return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
		}
		exe = e
	}

	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}
	killFD, err := openHigh(cgroupPath+"/cgroup.kill", unix.O_WRONLY)
	if errors.Is(err, unix.ENOENT) {
		// No cgroup.kill (Linux < 5.14): the full guardian falls back to
		// freezing.
		return reaper.Identity{}, fmt.Errorf("%w: %w", ErrNoFast, err)
	}
	if err != nil {
		return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
	}
	fds = append(fds, killFD)
	eventsFD, err := openHigh(cgroupPath+"/cgroup.events", unix.O_RDONLY)
	if err != nil {
		closeAll()
		return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
	}
	fds = append(fds, eventsFD)
	nullFD, err := openHigh("/dev/null", unix.O_RDWR)
	if err != nil {
		closeAll()
		return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
	}
	fds = append(fds, nullFD)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		closeAll()
		return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
	}
	for i, fd := range p {
		// Our stdio was closed: the child's dup3 would clobber a low fd.
		if p[i], err = dupHigh(fd); err != nil {
			// dupHigh closed fd; the other end is ours to close.
			_ = unix.Close(p[1-i])
			closeAll()
			return reaper.Identity{}, fmt.Errorf("guardian: %w", err)
		}
	}
	fds = append(fds, p[0], p[1])

	a := &fastGuard.args
	*a = fastGuardArgs{pipeFD: int64(p[0]), killFD: int64(killFD), nullFD: int64(nullFD), eventsFD: int64(eventsFD),
		pollFD: int32(eventsFD), pollEvents: unix.POLLPRI}
	keepFDs := []int{p[0], killFD, nullFD, eventsFD}
	slices.Sort(keepFDs)
	lo := int64(3)
	for _, fd := range keepFDs {
		if int64(fd) > lo {
			a.ranges[a.nRanges] = [2]int64{lo, int64(fd) - 1}
			a.nRanges++
		}
		lo = int64(fd) + 1
	}
	a.ranges[a.nRanges] = [2]int64{lo, math.MaxUint32}
	a.nRanges++
	copy(a.comm[:15], FastName)
	a.one[0] = '1'
	// /proc/self/exe is our (shared) executable even if the file was
	// replaced or deleted since; o.Binary, as for Start, overrides.
	path := cstr("/proc/self/exe")
	if o.Binary != "" {
		path = cstr(o.Binary)
	}
	argv := cstrs(append([]string{exe}, o.Args()...))
	removed := o
	removed.Removed = append(removed.Removed[:len(removed.Removed):len(removed.Removed)], strings.TrimPrefix(filepath.Base(cgroupPath), cgroup.Prefix))
	argvRemoved := cstrs(append([]string{exe}, removed.Args()...))
	envp := cstrs(append(os.Environ(), "GOMAXPROCS=1"))
	cgPath := cstr(cgroupPath)
	fastGuard.keep = []any{path, argv, argvRemoved, envp, cgPath}
	a.path = uintptr(unsafe.Pointer(&path[0]))
	a.argv = uintptr(unsafe.Pointer(&argv[0]))
	a.argvRemoved = uintptr(unsafe.Pointer(&argvRemoved[0]))
	a.envp = uintptr(unsafe.Pointer(&envp[0]))
	a.cgPath = uintptr(unsafe.Pointer(&cgPath[0]))
	stack := uintptr(unsafe.Pointer(&fastGuard.stack[len(fastGuard.stack)-64])) &^ 15

	var pid int
	_, err = o.Reaper.Subscribe(func() (int, error) {
		// Every signal blocked across the clone: the child inherits the
		// mask, so no Go signal handler ever runs in it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var all, old unix.Sigset_t
		for i := range all.Val {
			all.Val[i] = ^uint64(0)
		}
		if err := unix.PthreadSigmask(unix.SIG_SETMASK, &all, &old); err != nil {
			return 0, fmt.Errorf("guardian: block signals: %w", err)
		}
		cpid, errno := fastGuardClone(a, stack)
		_ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		if e := unix.Errno(errno); e == unix.ENOSYS || e == unix.EPERM {
			// A seccomp filter (or a sandbox) that refuses this clone:
			// the exec'd guardian needs only fork and exec.
			return 0, fmt.Errorf("%w: clone: %w", ErrNoFast, e)
		} else if errno != 0 {
			return 0, fmt.Errorf("guardian: clone: %w", e)
		}
		pid = cpid
		return cpid, nil
	})
	// The child has its own copies; only the pipe's write end stays ours.
	for _, fd := range fds {
		if fd != p[1] {
			_ = unix.Close(fd)
		}
	}
	if err != nil {
		_ = unix.Close(p[1])
		return reaper.Identity{}, err
	}
	fastGuard.used = true
	fastGuard.pipeW = p[1]
	id, err := reaper.IdentityOf(pid)
	if err != nil {
		return reaper.Identity{PID: pid}, nil
	}
	return id, nil
}

// FastAvailable reports whether StartFast can be used on
// this host (given a run cgroup with cgroup.kill): nil, or an error
// wrapping ErrNoFast that says why not.
func FastAvailable() error {
	if !closeRangeWorks() {
		return fmt.Errorf("%w: no close_range(2) (Linux < 5.9)", ErrNoFast)
	}
	return nil
}

// closeRangeWorks probes close_range(2) once, on a range no process has
// open: ENOSYS says the kernel lacks it.
var closeRangeWorks = sync.OnceValue(func() bool {
	err := unix.CloseRange(math.MaxUint32, math.MaxUint32, 0)
	return !errors.Is(err, unix.ENOSYS)
})

// openHigh opens path close-on-exec at a descriptor >= 3.
func openHigh(path string, flags int) (int, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	return dupHigh(fd)
}

// dupHigh moves fd to a close-on-exec descriptor >= 3 if it is below (the
// original is closed either way on failure).
func dupHigh(fd int) (int, error) {
	if fd >= 3 {
		return fd, nil
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	_ = unix.Close(fd)
	if err != nil {
		return -1, err
	}
	return nfd, nil
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// cstrs returns a NULL-terminated array of NUL-terminated strings; the
// strings stay reachable through the array.
func cstrs(ss []string) []*byte {
	out := make([]*byte, 0, len(ss)+1)
	for _, s := range ss {
		out = append(out, &cstr(s)[0])
	}
	return append(out, nil)
}
