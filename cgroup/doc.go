// Package cgroup manages snakepit's run cgroups on the cgroup v2 hierarchy:
// finding the cgroup2 mount (pure v2 at /sys/fs/cgroup, or the "unified"
// mount of a hybrid host), reading a process's own cgroup, creating and
// removing snakepit-<runid> groups, killing everything in a group
// (cgroup.kill, or freeze-kill-thaw where cgroup.kill does not exist) and
// waiting until a group is empty (cgroup.events).
//
// The cgroup root is injectable (see FS) so unit tests run on a temp dir and
// integration tests on the real cgroupfs.
package cgroup

import "errors"

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrNoCgroup2 means no cgroup2 filesystem is mounted where we look.
	ErrNoCgroup2 = errors.New("no cgroup2 filesystem mounted")
	// ErrExists means the run cgroup already exists: the run ID is in use.
	ErrExists = errors.New("run cgroup already exists")
	// ErrNotExist means the cgroup does not exist (never created, or removed).
	ErrNotExist = errors.New("cgroup does not exist")
	// ErrPermission means the cgroupfs refused us (not root, not delegated,
	// or mounted read-only).
	ErrPermission = errors.New("permission denied on cgroupfs")
	// ErrNoKill means neither cgroup.kill (Linux >= 5.14) nor cgroup.freeze
	// (Linux >= 5.2) exists, so a group cannot be killed atomically.
	ErrNoKill = errors.New("neither cgroup.kill nor cgroup.freeze is available")
	// ErrUnsupported is returned on platforms without cgroup v2.
	ErrUnsupported = errors.New("cgroup v2 is only supported on Linux")
)

// Prefix is the name prefix of every run cgroup.
const Prefix = "snakepit-"
