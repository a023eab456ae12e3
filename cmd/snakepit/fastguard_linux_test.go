//go:build linux && amd64

package main

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// TestFastGuardianHoldsNothing: the in-process guardian of `snakepit run`
// is a clone of the wrapper, so it starts with copies of all the wrapper's
// descriptors. It must keep none of the caller's (a `$(snakepit run ...)`
// would otherwise wait for it), sit in its own session with every signal
// blocked, and leave once the wrapper has.
func TestFastGuardianHoldsNothing(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cmd := exec.Command(binPath, "run", "--run-id", id, "--grace", "1s", "--", "sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		lcWaitGone(t, id, 10*time.Second)
	})
	g := lcWaitRun(t, id, 1)
	gd := lcGuardian(t, g)
	pid := strconv.Itoa(gd.PID)
	// The guardian is recorded as soon as it is cloned; it names itself,
	// drops the wrapper's descriptors and starts its session only then.
	// Wait for all that to be done (the assertions below say what is not).
	testenv.Within(10*time.Second, func() bool {
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		ents, _ := os.ReadDir("/proc/" + pid + "/fd")
		sid, _ := unix.Getsid(gd.PID)
		return strings.TrimSpace(string(comm)) == guardian.FastName && len(ents) == 7 && sid == gd.PID
	})

	comm, err := os.ReadFile("/proc/" + pid + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != guardian.FastName {
		t.Fatalf("guardian comm %q, want %q (the in-process guardian)", got, guardian.FastName)
	}
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/" + pid + "/fd/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(e.Name())
		switch {
		case n <= 2 && target != "/dev/null":
			t.Errorf("guardian fd %d -> %s, want /dev/null", n, target)
		case n > 2:
			kept = append(kept, target)
		}
	}
	// Exactly: the owner pipe's read end, the run's cgroup.kill and
	// cgroup.events, /dev/null.
	if len(kept) != 4 || !containsSuffix(kept, "/cgroup.kill") || !containsSuffix(kept, "/cgroup.events") ||
		!containsPrefix(kept, "pipe:") || !containsSuffix(kept, "/dev/null") {
		t.Errorf("guardian keeps fds %v, want the owner pipe, cgroup.kill, cgroup.events and /dev/null only", kept)
	}
	gsid, err := unix.Getsid(gd.PID)
	if err != nil {
		t.Fatal(err)
	}
	wsid, err := unix.Getsid(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if gsid != gd.PID || gsid == wsid {
		t.Errorf("guardian session %d (wrapper's %d), want its own", gsid, wsid)
	}
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	// All blocked but SIGKILL (bit 8) and SIGSTOP (bit 18), which cannot be.
	if !strings.Contains(string(st), "SigBlk:\tfffffffffffbfeff\n") {
		t.Errorf("guardian signal mask: %s", grepLine(string(st), "SigBlk"))
	}

	// End the run: the caller's pipe reaches EOF as soon as the wrapper
	// exits (the guardian holds no copy), and the guardian follows.
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eof := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, out); eof <- err }()
	select {
	case err := <-eof:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stdout pipe still open 10s after SIGTERM to the wrapper")
	}
	_ = cmd.Wait()
	lcWaitExited(t, "guardian", []*reaper.Pinned{gd}, 10*time.Second)
}

func containsSuffix(ss []string, suf string) bool {
	for _, s := range ss {
		if strings.HasSuffix(s, suf) {
			return true
		}
	}
	return false
}

func containsPrefix(ss []string, pre string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, pre) {
			return true
		}
	}
	return false
}

func grepLine(s, key string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, key) {
			return l
		}
	}
	return ""
}

// TestFastGuardianChildCgroups: a run whose worker made a child cgroup
// cannot be removed by one rmdir. The in-process guardian kills it, sees
// it empty but still busy, and hands the removal to the full guardian,
// which removes the child cgroup first.
func TestFastGuardianChildCgroups(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	script := `d=$(sed -n 's/^0:://p' /proc/self/cgroup); m=$(awk '$9=="cgroup2"{print $5; exit}' /proc/self/mountinfo)
mkdir "$m$d/inner" && echo $$ > "$m$d/inner/cgroup.procs" && setsid sleep 300 & exec sleep 301`
	cmd := lcStart(t, id, "run", "--run-id", id, "--", "sh", "-c", script)
	g := lcWaitRun(t, id, 2)
	testenv.Eventually(t, 10*time.Second, "the worker makes a child cgroup", func() bool {
		_, err := os.Stat(g.Path() + "/inner")
		return err == nil
	})
	procs := lcPin(t, g)
	gd := lcGuardian(t, g)
	t0 := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	lcWaitExited(t, "run processes", procs, 10*time.Second)
	lcWaitGone(t, id, 10*time.Second)
	lcWaitExited(t, "guardian", []*reaper.Pinned{gd}, 10*time.Second)
	_ = cmd.Wait()
	t.Logf("SIGKILL -> run with a child cgroup removed in %v", time.Since(t0))
}
