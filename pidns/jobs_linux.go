package pidns

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/jobctl"
)

// Job control through the namespace. On a terminal the command's process
// group has the terminal, and ^Z stops it, not us; but we cannot stop in
// turn (signals from inside our namespace do not reach its init), so the
// wrapper, outside, is told on a socket of its own: jobctl.MsgStopped when
// the command stopped (we have taken the terminal back), and it answers
// jobctl.MsgContinue once it was continued itself (we hand the terminal on
// again and continue the group).

type jobControl struct {
	f   *os.File // the socket
	pid int      // the command, leader of its process group
	c   <-chan struct{}
}

func newJobControl(fd, pid int) *jobControl {
	if fd < 0 {
		return nil
	}
	j := &jobControl{f: os.NewFile(uintptr(fd), "job-control"), pid: pid}
	j.c = jobctl.Notices(j.f, jobctl.MsgContinue)
	return j
}

// continues delivers the wrapper's MsgContinue (never, without job control).
func (j *jobControl) continues() <-chan struct{} {
	if j == nil {
		return nil
	}
	return j.c
}

// stopped is called on SIGCHLD: if the command was stopped, take the
// terminal back (if its group had it) and tell the wrapper.
func (j *jobControl) stopped() {
	if j == nil || !jobctl.Stopped(j.pid, -1) {
		return
	}
	jobctl.HandOff(0, j.pid, unix.Getpgrp())
	_, _ = j.f.Write([]byte{jobctl.MsgStopped})
}

// resume hands the terminal back to the command's group if it is ours (we
// were continued in the foreground) and continues the group.
func (j *jobControl) resume() {
	jobctl.HandOff(0, unix.Getpgrp(), j.pid)
	_ = unix.Kill(-j.pid, unix.SIGCONT)
}

// JobControl is the wrapper's end of the job-control socket of a command
// started through the init on a terminal (Options.JobControl is the
// init's end).
type JobControl struct {
	f     *os.File
	stops <-chan struct{}
}

// NewJobControl makes the socket: our end, and the init's for
// Options.JobControl (close it once the init is started: it has its copy).
func NewJobControl() (*JobControl, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("job-control socket: %w", err)
	}
	_ = unix.SetNonblock(fds[0], true) // read in the runtime's poller
	j := &JobControl{f: os.NewFile(uintptr(fds[0]), "job-control")}
	j.stops = jobctl.Notices(j.f, jobctl.MsgStopped)
	return j, os.NewFile(uintptr(fds[1]), "job-control"), nil
}

// Stops delivers a value each time the init says its command was stopped
// from the terminal (it has taken the terminal back); nil for a nil j.
func (j *JobControl) Stops() <-chan struct{} {
	if j == nil {
		return nil
	}
	return j.stops
}

// Continue tells the init to hand the terminal back to its command (if
// the init has it) and continue the command's process group.
func (j *JobControl) Continue() error {
	_, err := j.f.Write([]byte{jobctl.MsgContinue})
	return err
}

// Close closes our end; nil-safe.
func (j *JobControl) Close() {
	if j != nil {
		j.f.Close()
	}
}
