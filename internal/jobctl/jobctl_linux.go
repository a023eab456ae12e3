package jobctl

import (
	"os"
	"os/signal"
	"runtime"

	"golang.org/x/sys/unix"
)

// Foreground returns the foreground process group of terminal fd.
func Foreground(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.TIOCGPGRP) }

// Ours reports whether fd is a terminal whose foreground group is ours.
func Ours(fd int) bool {
	fg, err := Foreground(fd)
	return err == nil && fg == unix.Getpgrp()
}

// HandOff makes to the foreground group of terminal fd if from has it now
// (from 0: whoever has it). SIGTTOU is ignored meanwhile: we may be in the
// background ourselves.
func HandOff(fd, from, to int) {
	if from != 0 {
		if fg, err := Foreground(fd); err != nil || fg != from {
			return
		}
	}
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, to)
}

// cldStopped is si_code CLD_STOPPED.
const cldStopped = 5

// Stopped reports, and consumes, a stop of our child pid (through pidfd
// when it is not -1): waitid(WSTOPPED) without WEXITED never collects an
// exit, which stays for whoever reaps.
func Stopped(pid, pidfd int) bool {
	var info unix.Siginfo
	var err error
	if pidfd >= 0 {
		err = unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WSTOPPED|unix.WNOHANG, nil)
	} else {
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WSTOPPED|unix.WNOHANG, nil)
	}
	return err == nil && info.Signo == int32(unix.SIGCHLD) && info.Code == cldStopped
}

// StopSelf stops this process until a SIGCONT. SIGSTOP, not SIGTSTP: the
// kernel discards a SIGTSTP sent to an orphaned process group. Sent to the
// calling thread, which then stops before the syscall returns; sent to the
// process, another thread might take it while this one goes on.
func StopSelf() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSTOP)
}

// The messages between snakepit run and a --pid-ns init on their
// job-control socket (SOCK_SEQPACKET, one byte each).
const (
	MsgStopped  = 'T' // init: my command was stopped; I have the terminal
	MsgContinue = 'C' // run: I was continued; continue your command
)

// Notices reads one-byte messages from f until a read fails (the peer is
// gone, or f was closed) and delivers one value for each msg; values not
// yet taken are coalesced.
func Notices(f *os.File, msg byte) <-chan struct{} {
	c := make(chan struct{}, 1)
	go func() {
		b := make([]byte, 1)
		for {
			n, err := f.Read(b)
			if err != nil {
				return
			}
			if n == 1 && b[0] == msg {
				select {
				case c <- struct{}{}:
				default:
				}
			}
		}
	}()
	return c
}
