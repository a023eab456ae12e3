package main

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// startParent is the process that started us, as it was before anything
// could have died.
var startParent = os.Getppid()

// parentDeathSignal is what the kernel sends us when our parent dies
// (--die-with-parent): a real-time signal of our own, never forwarded to
// the command. The kernel also sends it when only the parent's thread that
// forked us exits (a thread pool's worker), so on receipt the wrapper asks
// parentGone and otherwise ignores it; SIGHUP, which a user may send, could
// not be told apart from that.
const parentDeathSignal = unix.Signal(42) // real-time; glibc's SIGRTMIN+8

// exitParentDied is the status of a wrapper whose parent died: 128+SIGHUP,
// what a shell reports for a command its terminal hung up on.
const exitParentDied = 128 + int(unix.SIGHUP)

// watchParent asks for parentDeathSignal when our parent dies and reports
// whether it has died already (before the request, or at any time since we
// started).
func watchParent() (gone bool, err error) {
	// PR_SET_PDEATHSIG belongs to the thread that set it, and the runtime
	// ends a thread only when a goroutine exits locked to it: locked for
	// good, this thread lives as long as the calling goroutine (main).
	// Locked here rather than from init: a locked main goroutine costs a
	// thread hand-off at every wait of every other command and run.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0, 0, 0); err != nil {
		return false, err
	}
	return parentGone(), nil
}

// parentGone: we were re-parented, so the process that started us is dead.
func parentGone() bool { return os.Getppid() != startParent }
