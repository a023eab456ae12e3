//go:build linux

package spawn

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/snakepit/snakepit/internal/testenv"
)

// cgroupOf returns the cgroup2 path of pid ("0::" line).
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "0::"); ok {
			return v
		}
	}
	t.Fatalf("pid %d: no cgroup2 line in %q", pid, b)
	return ""
}

// A child goes where the Options place it; without a cgroup in the
// Options, where its own SysProcAttr says (a caller's UseCgroupFD).
func TestCgroupPlacement(t *testing.T) {
	m := testenv.RequireCgroup2(t)
	if !Clone3Supported() {
		testenv.Missing(t, "clone3 CLONE_INTO_CGROUP refused by this kernel")
	}
	dir := filepath.Join(m.Path, fmt.Sprintf("sptest-spawn-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := strings.TrimPrefix(dir, m.Path)
	s := New()
	defer s.Close()
	start := func(o Options, modify func(*exec.Cmd)) {
		t.Helper()
		p, err := s.Start(context.Background(), func() *exec.Cmd {
			cmd := exec.Command("/bin/sleep", "1000")
			if modify != nil {
				modify(cmd)
			}
			return cmd
		}, o)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		got := cgroupOf(t, p.PID)
		_ = p.Cmd.Process.Kill()
		_ = p.Cmd.Wait()
		if p.PidFD >= 0 {
			syscall.Close(p.PidFD)
		}
		if got != want {
			t.Errorf("child in %q, want %q", got, want)
		}
	}
	start(Options{Cgroup: dir, CgroupDir: f}, nil)
	start(Options{}, func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	})
}
