// Package jail sets up what a worker runs in, besides its cgroup: its
// network namespace (Netns: none, or a named one joined on the spawner's
// locked thread), its identity (Cred: user, groups, no_new_privs) and its
// readiness (Ready: sd_notify READY=1 on a socket of its own, or a stdout
// line). A run's Run holds its namespace and prepares each worker's
// command (Prepare) before the worker is spawned; it is released when the
// run is torn down.
package jail
