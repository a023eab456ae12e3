// Package pidns runs a command as the child of a minimal init in a new PID
// namespace.
//
// Wrap rewrites an exec.Cmd so that it starts the snakepit binary in its
// hidden `__init` mode with CLONE_NEWPID|CLONE_NEWNS (plus CLONE_NEWUSER with
// the caller's uid and gid mapped to themselves when the caller is not root).
// Main is that init: it makes every mount private (so the host is never
// touched), mounts a fresh /proc so tools inside see the namespace, starts the
// command in its own process group, forwards signals to it, reaps every
// zombie of the namespace, and exits with the command's status (128+N for
// signal N) after asking the rest of the namespace to leave.
//
// The point is containment that needs no cgroup and no helper process: the
// init is PID 1 of the namespace, so when it dies the kernel SIGKILLs every
// process in the namespace. With Pdeathsig on the init (the spawn package
// always sets it), a SIGKILLed supervisor takes the whole namespace with it,
// even when nothing else (guardian, gc) survives to clean up.
package pidns

import "errors"

// Subcommand is the hidden snakepit subcommand that runs Main.
const Subcommand = "__init"

// ErrUsage means the init was started with malformed arguments.
var ErrUsage = errors.New("pidns: bad __init arguments")
