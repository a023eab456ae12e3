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
// (--die-with-parent). SIGHUP is forwarded to the command too; on receipt
// the wrapper tells the two apart by its parent.
const parentDeathSignal = unix.SIGHUP

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
// (The signal alone also comes when only the parent's thread that forked us
// exits.)
func parentGone() bool { return os.Getppid() != startParent }
