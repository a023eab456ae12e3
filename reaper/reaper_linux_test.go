//go:build linux

package reaper

import (
	"os/exec"
	"syscall"
	"testing"
)

func TestStartDetachedPID(t *testing.T) {
	rp := New(nil)
	rp.Start()
	defer rp.Stop()
	for _, r := range []*Reaper{nil, rp} {
		cmd := exec.Command("sleep", "100")
		pid, err := StartDetached(r, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if pid <= 0 {
			t.Fatalf("StartDetached(reaper %v): pid %d", r != nil, pid)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
