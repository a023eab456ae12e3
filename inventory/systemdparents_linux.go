//go:build linux

package inventory

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/systemd"
)

// Under systemd, runs live below whichever unit made them (a delegated
// service or scope) or in a scope of their own (package placement), all
// over the tree systemd manages. There is no one parent to look in, so
// the tree is walked for directories named snakepit-<runid>; their
// parents are known parents. Bounded: systemd nests units a few levels
// deep (slices, a unit, a delegatee's leaves), and a run's own subtree is
// never entered.
const systemdWalkDepth = 8

func init() {
	extraParentsHooks = append(extraParentsHooks, systemdParents)
}

func systemdParents() []string {
	if !systemd.IsRunning() {
		return nil
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			if id, ok := strings.CutPrefix(e.Name(), cgroup.Prefix); ok && runid.Validate(id) == nil {
				if !seen[dir] {
					seen[dir] = true
					out = append(out, dir)
				}
				continue
			}
			if depth < systemdWalkDepth {
				walk(filepath.Join(dir, e.Name()), depth+1)
			}
		}
	}
	walk(m.Path, 0)
	return out
}
