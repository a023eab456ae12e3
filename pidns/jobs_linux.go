package pidns

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// Job control through the namespace. On a terminal the command's process
// group has the terminal, and ^Z stops it, not us; but we cannot stop in
// turn (signals from inside our namespace do not reach its init), so the
// wrapper, outside, is told on a socket of its own: "T" when the command
// stopped (we have taken the terminal back), and it answers "C" once it was
// continued itself (we hand the terminal on again and continue the group).

// The two messages of the job-control socket.
const (
	JobStopped  = 'T'
	JobContinue = 'C'
)

type jobControl struct {
	f   *os.File // nil: no job control
	pid int      // the command, leader of its process group
	c   chan struct{}
}

func newJobControl(fd, pid int) *jobControl {
	if fd < 0 {
		return nil
	}
	unix.CloseOnExec(fd)
	j := &jobControl{f: os.NewFile(uintptr(fd), "job-control"), pid: pid, c: make(chan struct{}, 1)}
	go j.read()
	return j
}

func (j *jobControl) read() {
	b := make([]byte, 1)
	for {
		n, err := j.f.Read(b)
		if err != nil {
			return // the wrapper is gone
		}
		if n == 1 && b[0] == JobContinue {
			select {
			case j.c <- struct{}{}:
			default:
			}
		}
	}
}

// continues delivers the wrapper's "C"s (never, without job control).
func (j *jobControl) continues() <-chan struct{} {
	if j == nil {
		return nil
	}
	return j.c
}

// stopped is called on SIGCHLD: if the command was stopped, take the
// terminal back (if its group had it) and tell the wrapper.
func (j *jobControl) stopped() {
	if j == nil {
		return
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, j.pid, &info, unix.WSTOPPED|unix.WNOHANG, nil); err != nil ||
		info.Signo != int32(unix.SIGCHLD) || info.Code != cldStopped {
		return
	}
	handTerminal(j.pid, unix.Getpgrp())
	_, _ = j.f.Write([]byte{JobStopped})
}

// resume hands the terminal back to the command's group if it is ours (we
// were continued in the foreground) and continues the group.
func (j *jobControl) resume() {
	handTerminal(unix.Getpgrp(), j.pid)
	_ = unix.Kill(-j.pid, unix.SIGCONT)
}

// cldStopped is si_code CLD_STOPPED.
const cldStopped = 5

// handTerminal makes to the foreground group of our terminal if from is.
func handTerminal(from, to int) {
	if fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP); err != nil || fg != from {
		return
	}
	signal.Ignore(unix.SIGTTOU) // from the background
	defer signal.Reset(unix.SIGTTOU)
	_ = unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, to)
}
