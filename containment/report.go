package containment

import "time"

// Report says what a teardown did.
type Report struct {
	// Terminated is how many processes got SIGTERM.
	Terminated int
	// Killed is true when the grace period ran out and the rest was killed.
	Killed bool
	// KillMechanism names how the rest was killed ("cgroup.kill", ...).
	KillMechanism string
	// Duration is the time the teardown took.
	Duration time.Duration
	// Vanished is true when the run cgroup was already gone (removed by
	// someone else while in use).
	Vanished bool
	// Escaped counts workers still alive once their containment was torn
	// down (a privileged worker that moved itself out of the run cgroup):
	// each was then killed through its pidfd.
	Escaped int
}
