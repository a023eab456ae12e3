//go:build linux

package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"
)

// Mode describes how cgroup v2 is mounted on this host.
type Mode string

const (
	// Unified: cgroup2 at /sys/fs/cgroup, all controllers on v2.
	Unified Mode = "unified"
	// Hybrid: cgroup v1 at /sys/fs/cgroup, cgroup2 at /sys/fs/cgroup/unified
	// (typically with no resource controllers).
	Hybrid Mode = "hybrid"
)

// Mount is a cgroup2 mount point.
type Mount struct {
	Path string
	Mode Mode
}

var (
	mountOnce sync.Once
	mountVal  Mount
	mountErr  error
)

// FindMount locates the cgroup2 mount by filesystem magic. It is probed once
// per process and cached.
func FindMount() (Mount, error) {
	mountOnce.Do(func() { mountVal, mountErr = findMount("/sys/fs/cgroup") })
	return mountVal, mountErr
}

func findMount(base string) (Mount, error) {
	if isCgroup2(base) {
		return Mount{Path: base, Mode: Unified}, nil
	}
	u := filepath.Join(base, "unified")
	if isCgroup2(u) {
		return Mount{Path: u, Mode: Hybrid}, nil
	}
	return Mount{}, fmt.Errorf("%w: neither %s nor %s is cgroup2", ErrNoCgroup2, base, u)
}

// InCgroup2 reports whether path, or its nearest existing ancestor (path
// may not exist yet), is on a cgroup2 filesystem: what a run parent must
// be before anything is made under it.
func InCgroup2(path string) bool {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return st.Type == unix.CGROUP2_SUPER_MAGIC
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" {
			return false
		}
	}
}

func isCgroup2(p string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// ParseProcCgroup returns the cgroup2 path (the "0::" line) of a
// /proc/PID/cgroup file. Hybrid hosts list v1 hierarchies too; they are
// ignored.
func ParseProcCgroup(data []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no 0:: line in /proc/PID/cgroup", ErrNoCgroup2)
}

// PathOf returns the cgroup2 path (relative to the cgroup2 root, starting
// with "/") of process pid; pid 0 means ourselves.
func PathOf(pid int) (string, error) {
	f := "/proc/self/cgroup"
	if pid != 0 {
		f = "/proc/" + strconv.Itoa(pid) + "/cgroup"
	}
	data, err := ReadFile(f)
	if err != nil {
		return "", err
	}
	return ParseProcCgroup(data)
}

// Group is one cgroup directory. It does not own a file descriptor beyond
// the lifetime of individual calls except for Dir, used by CLONE_INTO_CGROUP.
type Group struct {
	path string
}

// Open returns a handle on an existing cgroup directory (absolute path).
func Open(path string) (*Group, error) {
	if _, err := os.Stat(filepath.Join(path, "cgroup.procs")); err != nil {
		if gone(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotExist, path)
		}
		return nil, wrapPerm(err)
	}
	return &Group{path: path}, nil
}

// At returns the group at path without checking that it exists (Open
// does, with a stat): for callers that just listed it, where one system
// call per group counts. Operations on a group that is gone say
// ErrNotExist as usual.
func At(path string) *Group { return &Group{path: path} }

// Create makes the cgroup dir/name. The parent directory is created when
// missing (it must itself be inside a cgroup2 mount). EEXIST on the final
// component becomes ErrExists.
func Create(parent, name string) (*Group, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, wrapPerm(fmt.Errorf("create cgroup parent %s: %w", parent, err))
	}
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %s", ErrExists, p)
		}
		return nil, wrapPerm(fmt.Errorf("create cgroup %s: %w", p, err))
	}
	return &Group{path: p}, nil
}

func wrapPerm(err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return err
}

// Path is the absolute path of the cgroup directory.
func (g *Group) Path() string { return g.path }

// OpenDir opens the cgroup directory for CLONE_INTO_CGROUP. The caller
// closes it.
func (g *Group) OpenDir() (*os.File, error) {
	f, err := kfile.OpenDir(g.path)
	if err != nil {
		if gone(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		return nil, err
	}
	return f, nil
}

// Procs returns the PIDs in this cgroup (not its descendants).
func (g *Group) Procs() ([]int, error) {
	data, err := ReadFile(filepath.Join(g.path, "cgroup.procs"))
	if err != nil {
		if gone(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		return nil, err
	}
	return parsePIDs(data), nil
}

// ProcsRecursive returns the PIDs in this cgroup and all its descendants.
func (g *Group) ProcsRecursive() ([]int, error) {
	var out []int
	err := filepath.WalkDir(g.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if gone(err) && p != g.path {
				return nil // a child removed while we walk
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		data, err := ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			if gone(err) && p != g.path {
				return nil
			}
			return err
		}
		out = append(out, parsePIDs(data)...)
		return nil
	})
	if gone(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotExist, g.path)
	}
	return out, err
}

func parsePIDs(data []byte) []int {
	var pids []int
	for _, f := range bytes.Fields(data) {
		if n, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// Events is the parsed content of cgroup.events.
type Events struct {
	Populated bool
	Frozen    bool
}

// ReadEvents reads cgroup.events.
func (g *Group) ReadEvents() (Events, error) {
	var buf [128]byte
	n, err := kfile.Read(filepath.Join(g.path, "cgroup.events"), buf[:])
	if err != nil {
		if gone(err) {
			return Events{}, fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		return Events{}, err
	}
	return parseEvents(buf[:n]), nil
}

func parseEvents(b []byte) Events {
	var e Events
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		on := bytes.Equal(bytes.TrimSpace(v), []byte("1"))
		switch string(k) {
		case "populated":
			e.Populated = on
		case "frozen":
			e.Frozen = on
		}
	}
	return e
}

// ReadFile reads a whole cgroupfs interface file without the runtime's
// poller (internal/kfile says why).
func ReadFile(path string) ([]byte, error) { return kfile.ReadAll(path) }

// WriteFile writes val to a cgroupfs interface file with one open/write/
// close (no poller registration, as for ReadFile).
func WriteFile(path, val string) error { return writeFile(path, val) }

func writeFile(path, val string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(val)); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// Signal sends sig to every process of the group and its descendants. The
// list is read twice so that children forked while the first pass ran are
// signalled too; processes that escape both passes are caught by Kill.
func (g *Group) Signal(sig syscall.Signal) (int, error) {
	sent := make(map[int]bool)
	for pass := 0; pass < 2; pass++ {
		pids, err := g.ProcsRecursive()
		if err != nil {
			return len(sent), err
		}
		for _, pid := range pids {
			if sent[pid] {
				continue
			}
			sent[pid] = true
			g.SignalPID(pid, sig, nil)
		}
	}
	return len(sent), nil
}

// SignalPID signals pid, read from the group's cgroup.procs an instant
// ago, only if it is still a process of the group (and also(pid) holds,
// when given): between that read and the signal it may have exited and its
// PID gone to another process. A pidfd pins the process, then it is
// checked. Without pidfds (ENOSYS: Linux < 5.3) it falls back to kill(2).
func (g *Group) SignalPID(pid int, sig syscall.Signal, also func(pid int) bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		if also == nil || also(pid) {
			_ = unix.Kill(pid, sig)
		}
		return
	}
	if err != nil {
		return // ESRCH: gone already
	}
	defer unix.Close(fd)
	rel, err := PathOf(pid)
	if err != nil || !g.holds(rel) || (also != nil && !also(pid)) {
		return
	}
	_ = unix.PidfdSendSignal(fd, sig, nil, 0)
}

// holds reports whether the cgroup at rel (relative to the cgroup2 mount,
// as /proc/PID/cgroup names it) is this group or one below it.
func (g *Group) holds(rel string) bool {
	m, err := FindMount()
	if err != nil {
		return true // cannot tell: the PID came from our own cgroup.procs
	}
	p := filepath.Join(m.Path, rel)
	return p == g.path || strings.HasPrefix(p, g.path+"/")
}

// KillMechanism names how Kill works on this host.
type KillMechanism string

const (
	KillCgroupKill KillMechanism = "cgroup.kill"
	KillFreeze     KillMechanism = "freeze-kill-thaw"
)

var (
	killMu    sync.Mutex
	killProbe = map[string]KillMechanism{} // keyed by cgroup2 mount
)

// Kill SIGKILLs every process in the group and its descendants. It uses
// cgroup.kill; only when that file does not exist (ENOENT: Linux < 5.14) does
// it fall back to freeze-kill-thaw. The choice is cached per mount.
func (g *Group) Kill(ctx context.Context) (KillMechanism, error) {
	key := mountKey(g.path)
	killMu.Lock()
	m, known := killProbe[key]
	killMu.Unlock()
	if !known || m == KillCgroupKill {
		err := writeFile(filepath.Join(g.path, "cgroup.kill"), "1")
		if err == nil {
			if !known {
				setProbe(key, KillCgroupKill)
			}
			return KillCgroupKill, nil
		}
		if !gone(err) {
			return KillCgroupKill, wrapPerm(err)
		}
		// ENOENT: either the kernel lacks cgroup.kill or the group is gone.
		if _, serr := os.Stat(filepath.Join(g.path, "cgroup.procs")); serr != nil {
			return KillCgroupKill, fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		setProbe(key, KillFreeze)
	}
	return KillFreeze, g.freezeKill(ctx)
}

func setProbe(key string, m KillMechanism) {
	killMu.Lock()
	killProbe[key] = m
	killMu.Unlock()
}

// mountKey approximates "the mount this group lives on" by the first path
// components; different mounts differ there.
func mountKey(p string) string {
	if m, err := FindMount(); err == nil && strings.HasPrefix(p, m.Path) {
		return m.Path
	}
	return filepath.Dir(p)
}

// KillMechanismFor reports which mechanism Kill would use for group g,
// probing without killing anything.
func KillMechanismFor(g *Group) (KillMechanism, error) {
	if _, err := os.Stat(filepath.Join(g.path, "cgroup.kill")); err == nil {
		return KillCgroupKill, nil
	}
	if _, err := os.Stat(filepath.Join(g.path, "cgroup.freeze")); err == nil {
		return KillFreeze, nil
	}
	return "", ErrNoKill
}

func (g *Group) freezeKill(ctx context.Context) error {
	freeze := filepath.Join(g.path, "cgroup.freeze")
	if err := writeFile(freeze, "1"); err != nil {
		if gone(err) {
			return fmt.Errorf("%w: %s", ErrNoKill, g.path)
		}
		return wrapPerm(err)
	}
	// Thaw even if we fail below: frozen SIGKILLed tasks die only when thawed.
	defer writeFile(freeze, "0") //nolint:errcheck
	if err := g.waitEvents(ctx, func(e Events) bool { return e.Frozen || !e.Populated }, nil); err != nil {
		return err
	}
	for {
		pids, err := g.ProcsRecursive()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		// Frozen tasks cannot fork, so one pass covers everyone; the loop
		// only guards against tasks that joined between freeze and read.
		again, err := g.ProcsRecursive()
		if err != nil || len(again) <= len(pids) {
			return err
		}
	}
}

// WaitEmpty blocks until the group has no processes (cgroup.events
// "populated 0") or ctx ends. It needs no inotify instance (they are
// limited per user, fs.inotify.max_user_instances, 128 by default, and a
// mass teardown ran out of them): it polls the open cgroup.events file for
// POLLPRI, which is how kernfs delivers its change notifications. Those are
// rate-limited (~10-15 ms), so the wait is paired with short re-reads:
// every 1 ms for the first 50 ms, then every 20 ms; POLLPRI wakes us
// earlier.
func (g *Group) WaitEmpty(ctx context.Context) error {
	return g.waitEvents(ctx, func(e Events) bool { return !e.Populated }, nil)
}

// WaitKilled is WaitEmpty after a kill of the group: while the group is
// still populated it calls kill again, 100 ms after the wait began and
// then at doubling intervals up to 1 s. A process that joins after a kill
// (moved in through cgroup.procs, or cloned into the group once the kill
// has passed it) is not killed by it, and would hold the group, and the
// wait, until ctx ended. Killing a process that is dying already costs
// the kernel one more signal.
func (g *Group) WaitKilled(ctx context.Context, kill func() error) error {
	return g.waitEvents(ctx, func(e Events) bool { return !e.Populated }, kill)
}

// rekillFirst and rekillMax bound the intervals of WaitKilled's kills.
var rekillFirst, rekillMax = 100 * time.Millisecond, time.Second

func (g *Group) waitEvents(ctx context.Context, done func(Events) bool, again func() error) error {
	fd, err := unix.Open(filepath.Join(g.path, "cgroup.events"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if gone(err) {
			return fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		return fmt.Errorf("open %s: %w", filepath.Join(g.path, "cgroup.events"), err)
	}
	defer unix.Close(fd)
	var buf [128]byte
	// Each read from offset 0 re-arms POLLPRI for the next change.
	read := func() (Events, error) {
		for {
			n, err := unix.Pread(fd, buf[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				if gone(err) {
					return Events{}, fmt.Errorf("%w: %s", ErrNotExist, g.path)
				}
				return Events{}, fmt.Errorf("read %s/cgroup.events: %w", g.path, err)
			}
			return parseEvents(buf[:n]), nil
		}
	}
	start := time.Now()
	every := rekillFirst
	rekill := start.Add(every)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
	for {
		e, err := read()
		if err != nil {
			return err
		}
		if done(e) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for %s: %w", g.path, err)
		}
		if again != nil && time.Now().After(rekill) {
			if err := again(); err != nil {
				return err
			}
			every = min(2*every, rekillMax)
			rekill = time.Now().Add(every)
		}
		timeout := 1
		if time.Since(start) > 50*time.Millisecond {
			timeout = 20
		}
		if dl, ok := ctx.Deadline(); ok {
			if ms := int(time.Until(dl)/time.Millisecond) + 1; ms < timeout {
				timeout = max(ms, 0) // a passed deadline must not become poll's -1 (forever)
			}
		}
		if _, err := unix.Poll(pfd, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
	}
}

// RemoveOnce makes one attempt at Remove: nil when the group was removed
// or was already gone, an error wrapping EBUSY when it (or a child) still
// has processes, so that the caller can kill them first.
func (g *Group) RemoveOnce() error {
	err := removeTree(g.path)
	if err == nil || gone(err) {
		return nil
	}
	return wrapPerm(fmt.Errorf("remove cgroup %s: %w", g.path, err))
}

// Remove deletes the (empty) cgroup and any empty child cgroups, retrying
// EBUSY (a just-killed group can report busy until its last task is gone)
// until ctx ends. A group that is already gone is not an error.
func (g *Group) Remove(ctx context.Context) error {
	backoff := 200 * time.Microsecond
	for {
		err := g.RemoveOnce()
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		if err := g.WaitEmpty(ctx); err != nil && !errors.Is(err, ErrNotExist) {
			return fmt.Errorf("remove cgroup %s: %w", g.path, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: still busy: %w", g.path, ctx.Err())
		case <-time.After(backoff):
		}
		if backoff < 20*time.Millisecond {
			backoff *= 2
		}
	}
}

// removeTree rmdirs p's child cgroups depth-first, then p. cgroup directories
// hold only kernel files, which rmdir removes with the directory. Run
// cgroups rarely have children, so the plain rmdir is tried first and the
// directory is listed only when that fails (EBUSY with child cgroups; an
// ordinary directory in unit tests says ENOTEMPTY).
func removeTree(p string) error {
	err := unix.Rmdir(p)
	if err == nil || !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
		if errors.Is(err, unix.ENOENT) {
			return &fs.PathError{Op: "rmdir", Path: p, Err: err}
		}
		return err
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(p, e.Name())); err != nil && !gone(err) {
				return err
			}
		}
	}
	return unix.Rmdir(p)
}

// Controllers lists the controllers available in this group
// (cgroup.controllers): what its parent delegated to it.
func (g *Group) Controllers() ([]string, error) {
	data, err := ReadFile(filepath.Join(g.path, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}

// SubtreeControl lists the controllers enabled for this group's children.
func (g *Group) SubtreeControl() ([]string, error) {
	data, err := ReadFile(filepath.Join(g.path, "cgroup.subtree_control"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data)), nil
}

// EnterSelf moves the calling process into the group (writing "0" to
// cgroup.procs moves the writer itself, which is race-free).
func (g *Group) EnterSelf() error {
	if err := writeFile(filepath.Join(g.path, "cgroup.procs"), "0"); err != nil {
		if gone(err) {
			return fmt.Errorf("%w: %s", ErrNotExist, g.path)
		}
		return wrapPerm(err)
	}
	return nil
}

// Move moves process pid into the group.
func (g *Group) Move(pid int) error {
	return wrapPerm(writeFile(filepath.Join(g.path, "cgroup.procs"), strconv.Itoa(pid)))
}

// gone reports whether err means the cgroup (or one of its files) no longer
// exists: ENOENT, or ENODEV, which kernfs returns for a file opened just
// before its cgroup was removed.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV)
}

// DefaultParent returns <cgroup2 root>/snakepit: where runs are made when
// nothing else is chosen.
func DefaultParent() (string, error) {
	m, err := FindMount()
	if err != nil {
		return "", err
	}
	return filepath.Join(m.Path, "snakepit"), nil
}
