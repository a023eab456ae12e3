//go:build linux

package jail_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/systemd"
)

// A unit's limits apply to the workers of a `snakepit run` it starts:
// with Delegate=yes the run is made below the unit (package placement), so
// MemoryMax=64M of the unit OOM-kills a worker that allocates 200 MiB, and
// the wrapper reports it. Needs systemd as PID 1 with the memory controller:
// the VM rig.
func TestVMUnitMemoryMaxAppliesToWorkers(t *testing.T) {
	testenv.RequireControllers(t, "memory")
	if !systemd.IsRunning() {
		if testenv.InVMRig() {
			t.Fatal("VM rig: systemd is not PID 1")
		}
		t.Skip("skipping: systemd is not PID 1 here; this test runs in the VM rig (test/vm-rig)")
	}
	sr := testenv.RequireTool(t, "systemd-run")
	unit := "sptest-memmax-" + runid.Generate() + ".service"
	t.Cleanup(func() {
		_ = exec.Command("systemctl", "stop", unit).Run()
		_ = exec.Command("systemctl", "reset-failed", unit).Run()
	})
	cmd := exec.Command(sr, "--wait", "--pipe", "--quiet", "--unit", unit,
		"-p", "Delegate=yes", "-p", "MemoryMax=64M", "-p", "MemorySwapMax=0",
		"-E", helperEnv+"=alloc200", "-E", binEnv+"="+snakepitBin,
		snakepitBin, "run", "--", selfExe)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout.String(), "without being killed") {
		t.Fatalf("the worker allocated 200 MiB under the unit's MemoryMax=64M: %s", stdout.String())
	}
	if code != 137 || !strings.Contains(stderr.String(), "out of memory") || !strings.Contains(stderr.String(), "MemoryMax=") {
		t.Errorf("snakepit run in a MemoryMax=64M unit: exit %d, stderr %q; want 137 and an out-of-memory report naming a limit above the run", code, stderr.String())
	}
	t.Logf("exit %d; wrapper stderr: %s", code, strings.TrimSpace(stderr.String()))
}
