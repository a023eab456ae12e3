// Package posix contains a run without a cgroup (POSIX mode). What the run
// is made of is reconstructed from /proc whenever it is needed
// (reaper.Family): the workers and their descendants, the run's process
// groups, processes marked with the run ID and, for `snakepit run`, every
// orphan re-parented to the supervisor (a subreaper). Teardown is SIGTERM
// to all of them and to the process groups, grace, SIGKILL the same way,
// repeated until a walk of /proc finds none. Every signal goes through a
// pidfd of a verified identity, so a reused PID is never hit.
//
// A setsid'd process that also scrubs its argv and environment escapes
// this, unless the run uses a PID namespace (package pidns).
package posix
