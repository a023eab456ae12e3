//go:build linux

package testenv

import (
	"os"
	"path/filepath"
	"strconv"
)

// HoldsFile reports whether process pid has path open (a guardian holding
// a run's cgroup.kill, say).
func HoldsFile(pid int, path string) bool { return FilesOpen(pid, path) > 0 }

// FilesOpen counts the descriptors of process pid that name path as
// /proc/PID/fd shows it ("anon_inode:inotify" for an inotify instance);
// 0 when pid is gone.
func FilesOpen(pid int, path string) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}
