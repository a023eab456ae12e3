// Package containment is how a run holds its processes and how it is torn
// down. Containment is one interface, chosen once when a run is created,
// with two implementations: Cgroup here (the run cgroup: workers are
// cloned straight into it; teardown is SIGTERM to every process in it,
// grace, cgroup.kill, wait until empty, rmdir) and the POSIX one in package
// posix (process groups, the subreaper, run-ID markers and /proc walks).
//
// TeardownGroup is the same cgroup teardown for a run this process did not
// create (snakepit kill, gc, the guardian).
package containment
