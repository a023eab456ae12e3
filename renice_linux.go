//go:build linux

package snakepit

import (
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// guardianNice is the nice value a guardian starts with.
const guardianNice = 19

// lowerThreadPriority nices the calling OS thread (locked to this
// goroutine until the returned restore runs) so that a child forked from
// it inherits the nice value. Only done where the thread's priority can be
// restored afterwards (root or CAP_SYS_NICE: lowering a nice value is
// privileged); otherwise it does nothing.
func lowerThreadPriority() (restore func()) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	old, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil || os.Geteuid() != 0 {
		runtime.UnlockOSThread()
		return func() {}
	}
	// The raw syscall returns 20-nice.
	oldNice := 20 - old
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, guardianNice); err != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, oldNice); err != nil {
			// Cannot restore: never hand this thread back to the pool.
			return
		}
		runtime.UnlockOSThread()
	}
}

// restorePriority sets every thread of this process back to nice 0 (nice
// is per thread; threads inherit it from their creator). Failure (no
// privilege) leaves the guardian niced: slower under load, still correct.
func restorePriority() {
	if n, err := unix.Getpriority(unix.PRIO_PROCESS, 0); err == nil && 20-n == 0 {
		return
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
		}
	}
}
