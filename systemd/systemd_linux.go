//go:build linux

package systemd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
)

var (
	runningOnce sync.Once
	runningVal  bool
)

// IsRunning reports whether systemd is the init system (sd_booted(3):
// /run/systemd/system is a directory). Probed once and cached.
func IsRunning() bool {
	runningOnce.Do(func() {
		st, err := os.Lstat("/run/systemd/system")
		runningVal = err == nil && st.IsDir()
	})
	return runningVal
}

// OwnCgroup returns the absolute path of the cgroup2 directory the calling
// process is in.
func OwnCgroup() (string, error) {
	m, err := cgroup.FindMount()
	if err != nil {
		return "", err
	}
	rel, err := cgroup.PathOf(0)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(rel, "/..") {
		// We are outside our cgroup namespace's root (entered it with
		// setns without moving): there is no path to it from here.
		return "", fmt.Errorf("%w: own cgroup %q is outside this cgroup namespace", cgroup.ErrNotExist, rel)
	}
	return filepath.Join(m.Path, rel), nil
}

// delegateXattrs are the markers systemd (>= 251) sets on the cgroup of a
// unit with Delegate=yes: trusted.* for the system manager, user.* readable
// by unprivileged managers too.
var delegateXattrs = []string{"trusted.delegate", "user.delegate"}

// Inspect examines the cgroup directory path: delegation marker, owner,
// writability of the files a delegatee writes.
func Inspect(path string) (Delegation, error) {
	d := Delegation{Path: path}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return d, fmt.Errorf("%w: %s", cgroup.ErrNotExist, path)
		}
		return d, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	d.Owner = int(st.Uid)
	var buf [8]byte
	for _, name := range delegateXattrs {
		n, err := unix.Getxattr(path, name, buf[:])
		if err == nil && strings.TrimSpace(string(buf[:n])) == "1" {
			d.Xattr = true
			break
		}
	}
	d.Writable = true
	for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control"} {
		// AT_EACCESS: check with the effective IDs, as the writes will be.
		if err := unix.Faccessat(unix.AT_FDCWD, filepath.Join(path, f), unix.W_OK, unix.AT_EACCESS); err != nil {
			d.Writable = false
			break
		}
	}
	return d, nil
}

// CheckDelegated returns nil when path is delegated to us (see
// Delegation.Delegated), else a *DelegationError saying what is missing.
func CheckDelegated(path string) (Delegation, error) {
	d, err := Inspect(path)
	if err != nil {
		return d, err
	}
	euid := os.Geteuid()
	switch {
	case !d.Xattr:
		return d, &DelegationError{Path: path, Reason: "no trusted.delegate/user.delegate xattr (unit without Delegate=yes)"}
	case !d.Writable:
		return d, &DelegationError{Path: path, Reason: "cgroup.procs or cgroup.subtree_control not writable"}
	case d.Owner != euid:
		return d, &DelegationError{Path: path, Reason: fmt.Sprintf("owned by uid %d, we are %d", d.Owner, euid)}
	}
	return d, nil
}

// Layout is a delegated subtree prepared for runs.
type Layout struct {
	// Root is the delegated cgroup (the service's or scope's).
	Root string
	// Supervisor is the leaf the supervisor (and whatever else was in Root)
	// now lives in.
	Supervisor string
	// Moved is how many processes were moved from Root into Supervisor.
	Moved int
	// Controllers are the controllers enabled in Root's
	// cgroup.subtree_control, available to run cgroups.
	Controllers []string
}

// MoveToLeaf moves every process of the delegated cgroup root (normally
// just us) into root/supervisor, then enables root's available controllers
// for its children. Afterwards root holds no processes, so run cgroups
// (root/snakepit-<id>) can be created next to the supervisor leaf without
// breaking the no-internal-processes rule. Controllers that cannot be
// enabled are skipped: runs then just have no such limits.
func MoveToLeaf(root string) (Layout, error) {
	l := Layout{Root: root, Supervisor: filepath.Join(root, SupervisorLeaf)}
	if err := os.Mkdir(l.Supervisor, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return l, fmt.Errorf("create supervisor leaf: %w", err)
	}
	leaf, err := cgroup.Open(l.Supervisor)
	if err != nil {
		return l, err
	}
	// Ourselves first (writing "0" moves the writer, race-free), then
	// anything else that was in root. A process may fork while we read;
	// loop until root is empty.
	if err := leaf.EnterSelf(); err != nil {
		return l, fmt.Errorf("move supervisor into %s: %w", l.Supervisor, err)
	}
	l.Moved = 1
	rg, err := cgroup.Open(root)
	if err != nil {
		return l, err
	}
	for range 100 {
		pids, err := rg.Procs()
		if err != nil {
			return l, err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if err := leaf.Move(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
				return l, fmt.Errorf("move pid %d into %s: %w", pid, l.Supervisor, err)
			}
			l.Moved++
		}
	}
	l.Controllers = EnableControllers(root)
	return l, nil
}

// EnableControllers writes +c to root's cgroup.subtree_control for every
// controller in root's cgroup.controllers, one by one (one refusal must not
// cost the others), and returns those now enabled. root must hold no
// process (the no-internal-processes rule).
func EnableControllers(root string) []string {
	g, err := cgroup.Open(root)
	if err != nil {
		return nil
	}
	avail, err := g.Controllers()
	if err != nil {
		return nil
	}
	sc := filepath.Join(root, "cgroup.subtree_control")
	for _, c := range avail {
		_ = cgroup.WriteFile(sc, "+"+c)
	}
	on, _ := g.SubtreeControl()
	return on
}

// scopeName returns a unit name for a transient scope of process pid.
func scopeName(prefix string, pid int) string {
	return prefix + "-" + strconv.Itoa(pid) + ".scope"
}
