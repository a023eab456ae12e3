package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// HelperProcess is this test binary run again with env added to ours,
// running only the test named (a helper mode that env selects; "" runs no
// test, for a helper that TestMain dispatches).
func HelperProcess(test string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// StartHelper starts cmd and kills and reaps it when the test ends.
func StartHelper(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}
