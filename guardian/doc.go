// Package guardian tears a run down the moment its owner dies, however it
// dies. Owners register runs with the guardian service (service_linux.go):
// one process per user, outside every run and in its own session, that an
// owner connects to over a unix socket, passing each run's cgroup.kill; the
// owner holds the connection, and its EOF means the owner died. The first
// owner that finds no service starts one (`snakepit __guardian --serve`)
// under a lock; it exits when idle. The exec'd per-owner guardian
// (`snakepit __guardian --owner-pid ...`, Start and Run) is the fallback.
// Connect makes that choice for a new run (a Guard).
// This package builds and parses both command lines (Args, ServiceArgs,
// ParseArgs) and is the body of both (Main). It never runs the caller's
// own program: the snakepit binary is found by FindBinary.
package guardian
