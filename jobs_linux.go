package snakepit

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/jobctl"
)

// jobs is our end of the job-control socket of a worker started through a
// PID namespace's init with the terminal (Foreground): the init cannot
// stop itself when its command is stopped from the terminal, so it says
// so here (package internal/jobctl; pidns/jobs_linux.go).
type jobs struct {
	f     *os.File
	stops <-chan struct{}
}

// newJobs makes the socket when want; it returns our end and the init's.
func newJobs(want bool) (*jobs, *os.File, error) {
	if !want {
		return nil, nil, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("job-control socket: %w", err)
	}
	_ = unix.SetNonblock(fds[0], true) // read in the runtime's poller
	j := &jobs{f: os.NewFile(uintptr(fds[0]), "job-control")}
	j.stops = jobctl.Notices(j.f, jobctl.MsgStopped)
	return j, os.NewFile(uintptr(fds[1]), "job-control"), nil
}

func (j *jobs) close() {
	if j != nil {
		j.f.Close()
	}
}

// ErrNoJobControl: the worker has no job-control socket.
var ErrNoJobControl = errors.New("no job control: not a foreground worker in a PID namespace")

// JobStops delivers, for a Foreground worker of a PidNS run, a value each
// time its command was stopped from the terminal (^Z): the namespace's init
// has then taken the terminal back. The caller, having stopped itself in
// turn and been continued, answers with ContinueJob. It is nil for other
// workers, which a caller watches with waitid(WSTOPPED).
func (w *Worker) JobStops() <-chan struct{} {
	if w.jobs == nil {
		return nil
	}
	return w.jobs.stops
}

// ContinueJob tells the init of a worker that JobStops reported stopped to
// hand the terminal back to the command (if the init has it) and continue
// the command's process group.
func (w *Worker) ContinueJob() error {
	if w.jobs == nil {
		return ErrNoJobControl
	}
	_, err := w.jobs.f.Write([]byte{jobctl.MsgContinue})
	return err
}
