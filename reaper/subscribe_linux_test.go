//go:build linux

package reaper

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A start that does not end holds up neither reaping nor other starts: a
// child started and exited meanwhile is reaped and its exit delivered.
func TestSubscribeDoesNotHoldTheLock(t *testing.T) {
	r := New(nil)
	release := make(chan struct{})
	entered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Subscribe(func() (int, error) {
			close(entered)
			<-release
			return 0, exec.ErrNotFound
		})
		done <- err
	}()
	<-entered
	c, err := r.Subscribe(func() (int, error) {
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		pid := cmd.Process.Pid
		// The child exits before its PID is known: its exit is held.
		waitZombie(t, pid)
		r.Reap()
		return pid, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-c:
		if !e.Status.Exited() || e.Status.ExitStatus() != 0 {
			t.Errorf("exit %v", e.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exit of a child reaped while another start was stuck not delivered")
	}
	close(release)
	if err := <-done; err == nil {
		t.Error("stuck start's error lost")
	}
}

// waitZombie blocks until pid has exited, without reaping it.
func waitZombie(t *testing.T, pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			if err != nil {
				t.Errorf("waitid %d: %v", pid, err)
			}
			return
		}
	}
}
