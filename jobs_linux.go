package snakepit

import (
	"errors"
)

// ErrNoJobControl: the worker has no job-control socket.
var ErrNoJobControl = errors.New("no job control: not a foreground worker in a PID namespace")

// JobStops delivers, for a Foreground worker of a PidNS run, a value each
// time its command was stopped from the terminal (^Z): the namespace's init
// has then taken the terminal back (pidns.JobControl). The caller, having
// stopped itself in turn and been continued, answers with ContinueJob. It
// is nil for other workers, which a caller watches with waitid(WSTOPPED).
func (w *Worker) JobStops() <-chan struct{} { return w.jobs.Stops() }

// ContinueJob tells the init of a worker that JobStops reported stopped to
// hand the terminal back to the command (if the init has it) and continue
// the command's process group.
func (w *Worker) ContinueJob() error {
	if w.jobs == nil {
		return ErrNoJobControl
	}
	return w.jobs.Continue()
}
