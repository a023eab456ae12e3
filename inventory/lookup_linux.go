//go:build linux

package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// ParentsEnv names an environment variable with extra cgroup parents
// (colon-separated absolute paths) where runs are looked for.
const ParentsEnv = "SNAKEPIT_CGROUP_PARENTS"

// KnownParents returns every cgroup directory under which snakepit may have
// created runs on this host: the default parent, the parents named in
// SNAKEPIT_CGROUP_PARENTS, and extra. Duplicates and missing directories are
// dropped.
func KnownParents(extra ...string) []string {
	var cands []string
	cands = append(cands, extra...)
	if p, err := cgroup.DefaultParent(); err == nil {
		cands = append(cands, p)
	}
	if v := os.Getenv(ParentsEnv); v != "" {
		cands = append(cands, strings.Split(v, ":")...)
	}
	cands = append(cands, extraParents()...)
	seen := map[string]bool{}
	var out []string
	for _, p := range cands {
		if p == "" || !filepath.IsAbs(p) {
			continue
		}
		p = filepath.Clean(p)
		if seen[p] {
			continue
		}
		seen[p] = true
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// extraParentsHooks lets other parts of the package (daemon, systemd
// delegation) add parents they know of.
var extraParentsHooks []func() []string

func extraParents() []string {
	var out []string
	for _, h := range extraParentsHooks {
		out = append(out, h()...)
	}
	return out
}

// Lookup finds the cgroup of run id under parents (KnownParents() when
// none are given). The ID is validated before any filesystem access.
func Lookup(id string, parents ...string) (*cgroup.Group, error) {
	if err := runid.Validate(id); err != nil {
		return nil, err
	}
	if len(parents) == 0 {
		parents = KnownParents()
	}
	for _, p := range parents {
		g, err := cgroup.Open(filepath.Join(p, cgroup.Prefix+id))
		if err == nil {
			return g, nil
		}
		if !errors.Is(err, cgroup.ErrNotExist) && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownRun, id)
}

// Free refuses run ID id (ErrExists) when a run of either mechanism holds
// it: its cgroup under parent (empty: the default parent), or a record of
// a live owner. Two runs of one ID tear each other down (a POSIX teardown
// signals every process marked with its ID). A stat and a file read, not a
// look under every known parent: under systemd finding those walks the
// cgroup tree, and a pool that names its runs pays this on every start.
func Free(id, parent string) error {
	if parent == "" {
		parent, _ = cgroup.DefaultParent()
	}
	if parent != "" {
		if g, err := Lookup(id, parent); err == nil {
			return fmt.Errorf("%w: run %s at %s", cgroup.ErrExists, id, g.Path())
		}
	}
	if rec, err := record.Read(id); err == nil && rec.Owner.Alive() {
		return fmt.Errorf("%w: run %s (a %s run of live owner %d)", cgroup.ErrExists, id, rec.Mechanism, rec.Owner.PID)
	}
	return nil
}

// RunCgroupsOn returns the run cgroups (snakepit-<valid id>) that cgroup
// path p is in or is, the innermost first.
func RunCgroupsOn(p string) []string {
	var runs []string
	for dir := filepath.Clean(p); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if id, ok := strings.CutPrefix(filepath.Base(dir), cgroup.Prefix); ok && runid.Validate(id) == nil {
			runs = append(runs, dir)
		}
	}
	return runs
}

// ListRunCgroups returns the run cgroups (snakepit-<valid id>) directly
// under each parent, keyed by run ID.
func ListRunCgroups(parents ...string) (map[string]string, error) {
	if len(parents) == 0 {
		parents = KnownParents()
	}
	out := map[string]string{}
	for _, p := range parents {
		ents, err := os.ReadDir(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, e := range ents {
			id, ok := strings.CutPrefix(e.Name(), cgroup.Prefix)
			if !ok || !e.IsDir() || runid.Validate(id) != nil {
				continue
			}
			if _, dup := out[id]; !dup {
				out[id] = filepath.Join(p, e.Name())
			}
		}
	}
	return out, nil
}
