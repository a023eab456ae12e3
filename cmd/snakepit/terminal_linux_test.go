package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
)

// openPTY returns a new pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// Whatever is echoed is read and dropped: a full buffer would block
	// writers on the terminal.
	go func() {
		b := make([]byte, 4096)
		for {
			if _, err := m.Read(b); err != nil {
				return
			}
		}
	}()
	return m, s
}

// TestRunJobControl: on a terminal the command's process group has the
// terminal, so ^Z stops the command and not the wrapper, the shell's job.
// The wrapper must stop in turn (the shell otherwise waits for ever), and
// when continued (fg) hand the terminal back and continue the command;
// with --pid-ns through the namespace's init, which cannot stop itself.
func TestRunJobControl(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, mode := range [][]string{nil, {"--pid-ns"}} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			if len(mode) > 0 {
				testenv.RequireRoot(t)
			}
			jobControl(t, mode...)
		})
	}
}

func jobControl(t *testing.T, flags ...string) {
	master, slave := openPTY(t)
	id := runid.Generate()
	// As a login shell's job: the wrapper leads a session whose
	// controlling terminal is the slave, its group in the foreground.
	args := append(append([]string{"run", "--no-guardian", "--run-id", id}, flags...), "--", "sleep", "300")
	cmd := exec.Command(binPath, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wrapper := cmd.Process.Pid
	t.Cleanup(func() {
		_ = unix.Kill(wrapper, unix.SIGKILL)
		_ = cmd.Wait()
		lcWaitGone(t, id, 10*time.Second)
	})
	fg := func() int {
		pgrp, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPGRP)
		if err != nil {
			t.Fatal(err)
		}
		return pgrp
	}
	// The command, a group leader, has the terminal.
	g := lcWaitRun(t, id, 1)
	sleep := 0
	testenv.Eventually(t, 10*time.Second, "sleep in the foreground", func() bool {
		pids, _ := g.ProcsRecursive()
		for _, pid := range pids {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(b) == "sleep\x00300\x00" {
				sleep = pid
			}
		}
		return sleep != 0 && fg() == sleep
	})
	// The job-control socket (--pid-ns) stays the wrapper's and init's.
	// (What the test itself inherited passes through, as timeout(1)'s
	// caller's files do: only sockets are looked for.)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", sleep))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", sleep, e.Name()))
		if strings.HasPrefix(l, "socket:") {
			t.Errorf("the command holds fd %s (%s)", e.Name(), l)
		}
	}
	if _, err := master.Write([]byte{0x1a}); err != nil { // ^Z
		t.Fatal(err)
	}
	// What the shell waits for: its job stopped.
	var lastStop unix.Signal
	stopped := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(wrapper, &ws, unix.WUNTRACED, nil)
		stopped <- ws
	}()
	select {
	case ws := <-stopped:
		lastStop = ws.StopSignal()
		if !ws.Stopped() {
			t.Fatalf("the wrapper did not stop: %v", ws)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("^Z stopped the command but not the wrapper: the shell would wait for ever")
	}
	if got := fg(); got != wrapper {
		t.Fatalf("the terminal's foreground group is %d, want the wrapper's %d back (stopped by %v)", got, wrapper, lastStop)
	}
	// fg: the shell continues its job, which hands the terminal on.
	if err := unix.Kill(wrapper, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the command's group in the foreground again", func() bool { return fg() == sleep })
	if _, err := master.Write([]byte{0x03}); err != nil { // ^C: only a running command ends
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if code := exitStatus(t, err); code != 128+int(unix.SIGINT) {
			t.Fatalf("snakepit run exited %d, want %d (the command's SIGINT)", code, 128+int(unix.SIGINT))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not end on ^C after fg: was it continued?")
	}
	lcWaitGone(t, id, 10*time.Second)
}
