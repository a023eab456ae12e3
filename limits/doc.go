// Package limits applies a run's resource limits to its cgroup, watches
// its limit events (OOM kills, forks refused at pids.max) and reads its
// usage (Stats, the one shape that `snakepit ps --json` and the daemon's
// stats endpoint return).
//
// Limits are planned before the run cgroup exists (PlanFor: which
// controllers, enabled where, or a *ControllerError naming why one cannot
// be had) and applied after it is made, before any worker starts
// (Plan.Apply), so that a run whose limits cannot work fails before
// anything is created. Run carries one run's limits through those phases
// and its event watch until teardown.
package limits
