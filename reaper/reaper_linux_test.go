//go:build linux

package reaper

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit/snakepit/internal/testenv"
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
		st0, err := ReadStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		// Reaped (by the goroutine or the reaper), not left a zombie
		// for the next test to find among our children.
		testenv.Eventually(t, 10*time.Second, "the detached child reaped", func() bool {
			st, err := ReadStat(pid)
			return errors.Is(err, ErrNoProcess) || (err == nil && st.Start != st0.Start)
		})
	}
}
