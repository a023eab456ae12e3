//go:build linux

package testenv

import (
	"os"
	"path/filepath"
	"strconv"
)

// HoldsFile reports whether process pid has path open (a guardian holding
// a run's cgroup.kill, say).
func HoldsFile(pid int, path string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == path {
			return true
		}
	}
	return false
}
