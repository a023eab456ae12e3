//go:build linux

package limits

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snakepit/snakepit/cgroup"
)

// fakeCgroup makes a directory that looks like a cgroup to the planner.
func fakeCgroup(t *testing.T, dir, controllers, subtree, procs string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"cgroup.controllers": controllers, "cgroup.subtree_control": subtree, "cgroup.procs": procs} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPlanController(t *testing.T) {
	root := t.TempDir()
	m := cgroup.Mount{Path: root, Mode: cgroup.Unified}
	fakeCgroup(t, root, "cpu memory pids", "memory", "1\n")
	busy := filepath.Join(root, "busy")
	fakeCgroup(t, busy, "memory", "", "42\n")
	quiet := filepath.Join(root, "quiet")
	fakeCgroup(t, quiet, "memory", "", "")

	chain := func(p string) []string {
		c, err := cgroupChain(root, p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	steps := func(s []enableStep) string {
		var out []string
		for _, st := range s {
			rel, _ := filepath.Rel(root, st.dir)
			out = append(out, rel+"+"+strings.Join(st.ctrls, ","))
		}
		return strings.Join(out, " ")
	}

	// New parent under the root: memory is already passed down by the
	// root; only the new directory needs it.
	s, why := planController(m, chain(filepath.Join(root, "snakepit")), "memory")
	if why != "" || steps(s) != "snakepit+memory" {
		t.Errorf("memory under new dir: %q %q", steps(s), why)
	}
	// cpu must be enabled in the root first (exempt from the
	// no-internal-processes rule), then in the new directory.
	s, why = planController(m, chain(filepath.Join(root, "snakepit", "deeper")), "cpu")
	if why != "" || steps(s) != ".+cpu snakepit+cpu snakepit/deeper+cpu" {
		t.Errorf("cpu: %q %q", steps(s), why)
	}
	// An existing parent with processes cannot pass memory down.
	if _, why = planController(m, chain(busy), "memory"); !strings.Contains(why, "no-internal-processes") {
		t.Errorf("busy parent: %q", why)
	}
	// An empty existing parent can.
	if s, why = planController(m, chain(quiet), "memory"); why != "" || steps(s) != "quiet+memory" {
		t.Errorf("quiet parent: %q %q", steps(s), why)
	}
	// pids is not in quiet's cgroup.controllers: the root must pass it
	// down first.
	if s, why = planController(m, chain(quiet), "pids"); why != "" || steps(s) != ".+pids quiet+pids" {
		t.Errorf("pids via root: %q %q", steps(s), why)
	}
	// A controller the root does not have: the reason comes from
	// /proc/cgroups (on a hybrid host: the v1 hierarchy).
	if _, why = planController(m, chain(quiet), "hugetlb-nonexistent"); !strings.Contains(why, "not built into this kernel") {
		t.Errorf("unknown controller: %q", why)
	}
	if _, err := cgroupChain(root, "/elsewhere"); err == nil {
		t.Error("a parent outside the mount was accepted")
	}
}
