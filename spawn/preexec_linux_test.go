package spawn

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// The pre-exec fallback runs the command through /bin/sh, where
// /proc/self/exe would name the shell: a command given as /proc/self/exe
// (pidns.Wrap's default init) must reach the shell as our own binary.
func TestWrapPreExecNamesOurBinary(t *testing.T) {
	cmd := exec.Command("/proc/self/exe", "__init", "--grace", "1s")
	wrapPreExec(cmd, "/sys/fs/cgroup/x/cgroup.procs")
	want := "/proc/" + strconv.Itoa(os.Getpid()) + "/exe"
	if cmd.Path != "/bin/sh" || len(cmd.Args) < 5 || cmd.Args[4] != want || cmd.Args[5] != "__init" {
		t.Fatalf("wrapped: %s %q; want the program as %s", cmd.Path, cmd.Args, want)
	}
	other := exec.Command("/bin/true")
	wrapPreExec(other, "/x/cgroup.procs")
	if other.Args[4] != "/bin/true" {
		t.Fatalf("an ordinary path changed: %q", other.Args)
	}
}
