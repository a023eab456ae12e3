package main

import (
	"os/signal"
	"runtime"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
)

// The command of `snakepit run` on a terminal runs in its own process
// group, which gets the terminal: ^C reaches it once, not through us as
// well. Job control then has to be passed on by hand: a ^Z stops the
// command's group, not the shell's job (us), so we stop ourselves in turn,
// and continue the command when we are continued (fg, bg). With --pid-ns
// our child is the namespace's init, which tells us (Worker.JobStops).

// isForegroundTTY reports whether fd is a terminal whose foreground process
// group is ours: only then do we hand the terminal to the command.
func isForegroundTTY(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// restoreForeground takes the terminal back after the command's process
// group had it, so the shell that started us is not left without one.
func restoreForeground(fd int) {
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpgrp())
}

// commandStopped reports (and consumes) a stop of w: a SIGCHLD came, and
// waitid(WSTOPPED) says it was for w stopping. Exits are left to the
// reaper: WSTOPPED alone never collects one.
func commandStopped(w *snakepit.Worker) bool {
	var info unix.Siginfo
	var err error
	if fd := w.PidFD(); fd >= 0 {
		err = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WSTOPPED|unix.WNOHANG, nil)
	} else {
		err = unix.Waitid(unix.P_PID, w.PID(), &info, unix.WSTOPPED|unix.WNOHANG, nil)
	}
	return err == nil && info.Signo == int32(unix.SIGCHLD) && info.Code == cldStopped
}

// cldStopped is si_code CLD_STOPPED.
const cldStopped = 5

// suspend is called when the command's process group pgid was stopped
// from the terminal tty: we take the terminal back if the group had it,
// stop ourselves so that the shell sees its job stopped, and once
// continued hand the terminal back (if we were continued in the
// foreground) and continue the group: cont, or SIGCONT when nil. (With
// --pid-ns pgid is the init's group, which cont asks to go on.)
func suspend(tty, pgid int, cont func()) {
	signal.Ignore(unix.SIGTTOU) // setting the foreground from the background
	defer signal.Reset(unix.SIGTTOU)
	if fg, err := unix.IoctlGetInt(tty, unix.TIOCGPGRP); err == nil && fg == pgid {
		_ = unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, unix.Getpgrp())
	}
	// SIGSTOP, not the SIGTSTP the command got: the kernel discards a
	// SIGTSTP sent to an orphaned process group. Sent to this thread, so
	// that it stops before the syscall returns (sent to the process, another
	// thread may take it while this one goes on); the shell's SIGCONT
	// resumes us.
	runtime.LockOSThread()
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSTOP)
	runtime.UnlockOSThread()
	if fg, err := unix.IoctlGetInt(tty, unix.TIOCGPGRP); err == nil && fg == unix.Getpgrp() {
		_ = unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, pgid)
	}
	if cont != nil {
		cont()
		return
	}
	_ = unix.Kill(-pgid, unix.SIGCONT)
}
