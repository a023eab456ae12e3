//go:build linux

package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/snakepit/snakepit/cgroup"
)

// VMRigEnv is set to "1" by test/vm-rig in its guest (a pure cgroup-v2
// Debian VM with systemd), where every resource controller must work.
const VMRigEnv = "SNAKEPIT_VM_RIG"

// InVMRig reports whether the tests run inside the VM rig.
func InVMRig() bool { return os.Getenv(VMRigEnv) == "1" }

// RequireControllers needs root, cgroup2, and the named controllers
// (memory, pids, cpu) in the cgroup2 root's cgroup.controllers. Where they
// are missing (a hybrid host binds them to cgroup v1) the test is skipped
// with the reason, under CI too: those tests run in the VM rig, and there
// (SNAKEPIT_VM_RIG=1) a missing controller fails them.
func RequireControllers(t testing.TB, ctrls ...string) cgroup.Mount {
	t.Helper()
	RequireRoot(t)
	m, err := cgroup.FindMount()
	if err != nil {
		if InVMRig() {
			t.Fatalf("VM rig: no cgroup2: %v", err)
		}
		Missing(t, "needs cgroup2: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(m.Path, "cgroup.controllers"))
	have := strings.Fields(string(data))
	var missing []string
	for _, c := range ctrls {
		if !slices.Contains(have, c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		msg := "cgroup2 at " + m.Path + " (" + string(m.Mode) + ") lacks the " + strings.Join(missing, ", ") +
			" controller(s); this test runs in the VM rig (test/vm-rig)"
		if InVMRig() {
			t.Fatalf("VM rig: %s", msg)
		}
		t.Skip("skipping: " + msg)
	}
	return m
}
