//go:build linux

package spawn

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startSleep starts "sleep 1000" with s and kills it when the test ends.
func startSleep(t *testing.T, s *Spawner, o Options) *Process {
	t.Helper()
	p, err := s.Start(context.Background(), func() *exec.Cmd { return exec.Command("sleep", "1000") }, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if p.PidFD >= 0 {
			_ = unix.PidfdSendSignal(p.PidFD, unix.SIGKILL, nil, 0)
			unix.Close(p.PidFD)
		} else {
			_ = p.Cmd.Process.Kill()
		}
		_ = p.Cmd.Wait()
	})
	return p
}

func noNewPrivsOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NoNewPrivs:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no NoNewPrivs line")
	return ""
}

// NoNewPrivs children come from the companion thread and have the flag;
// the others do not, and the Spawner's own thread never gets it.
func TestNoNewPrivs(t *testing.T) {
	s := New()
	t.Cleanup(s.Close)
	with := startSleep(t, s, Options{NoNewPrivs: true})
	without := startSleep(t, s, Options{})
	again := startSleep(t, s, Options{NoNewPrivs: true})
	for _, c := range []struct {
		p    *Process
		want string
	}{{with, "1"}, {without, "0"}, {again, "1"}} {
		if got := noNewPrivsOf(t, c.p.PID); got != c.want {
			t.Errorf("PID %d: NoNewPrivs %s, want %s", c.p.PID, got, c.want)
		}
	}
	var flag int
	if err := s.Do(context.Background(), func() error {
		v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
		flag = v
		return err
	}); err != nil || flag != 0 {
		t.Errorf("the spawner's own thread has no_new_privs=%d (%v)", flag, err)
	}
}

// An Around undo that fails no longer panics: the child started is
// returned, the Spawner is marked broken and refuses further work, and its
// thread stays alive (parked), so the child's Pdeathsig does not fire.
func TestBrokenUndoParksSpawner(t *testing.T) {
	s := New()
	undoErr := errors.New("cannot go back")
	p := startSleep(t, s, Options{Around: func() (func() error, error) {
		return func() error { return undoErr }, nil
	}})
	if err := s.Err(); !errors.Is(err, ErrBroken) || !errors.Is(err, undoErr) {
		t.Fatalf("Err() = %v, want ErrBroken wrapping the undo error", err)
	}
	_, err := s.Start(context.Background(), func() *exec.Cmd { return exec.Command("true") }, Options{})
	if !errors.Is(err, ErrBroken) {
		t.Errorf("Start on a broken spawner: %v", err)
	}
	if err := s.Do(context.Background(), func() error { t.Error("ran on a broken thread"); return nil }); !errors.Is(err, ErrBroken) {
		t.Errorf("Do on a broken spawner: %v", err)
	}
	s.Close() // parks the thread instead of ending it
	if err := unix.PidfdSendSignal(p.PidFD, 0, nil, 0); err != nil {
		t.Errorf("the child died with its spawner's thread (Pdeathsig): %v", err)
	}
}

// An Around that fails may return an undo; it is run, and the child is
// not started.
func TestAroundErrorRunsUndo(t *testing.T) {
	s := New()
	t.Cleanup(s.Close)
	undone := false
	_, err := s.Start(context.Background(), func() *exec.Cmd {
		return exec.Command("true")
	}, Options{Around: func() (func() error, error) {
		return func() error { undone = true; return nil }, errors.New("half done")
	}})
	if err == nil || !undone {
		t.Errorf("err %v, undone %v", err, undone)
	}
	if s.Err() != nil {
		t.Errorf("spawner broken after a clean undo: %v", s.Err())
	}
}

// Warm starts the thread a later Start uses (the companion for nnp), so
// the first spawn finds it running; calling it again is a no-op, and a
// closed Spawner refuses it.
func TestWarm(t *testing.T) {
	s := New()
	t.Cleanup(s.Close)
	ctx := context.Background()
	if err := s.Warm(ctx, true); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	s.nnpMu.Lock()
	companion := s.nnp
	s.nnpMu.Unlock()
	if companion == nil {
		t.Fatal("Warm(nnp) did not start the no_new_privs companion")
	}
	if err := s.Warm(ctx, true); err != nil {
		t.Fatalf("second Warm: %v", err)
	}
	p := startSleep(t, s, Options{NoNewPrivs: true})
	s.nnpMu.Lock()
	same := s.nnp == companion
	s.nnpMu.Unlock()
	if !same {
		t.Error("Start made a new companion instead of using the warmed one")
	}
	if got := noNewPrivsOf(t, p.PID); got != "1" {
		t.Errorf("NoNewPrivs %s, want 1", got)
	}

	plain := New()
	if err := plain.Warm(ctx, false); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	plain.Close()
	if err := plain.Warm(ctx, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Warm on a closed Spawner: %v, want ErrClosed", err)
	}
}

// A start that never ends (here a Do whose function blocks, as a child
// stopped before exec holds its thread) does not hold up other starts: the
// Spawner adds a thread.
func TestStuckStartDoesNotBlockOthers(t *testing.T) {
	s := New()
	release := make(chan struct{})
	stuck := make(chan struct{})
	go func() {
		_ = s.Do(context.Background(), func() error { close(stuck); <-release; return nil })
	}()
	<-stuck
	t.Cleanup(func() { close(release); s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := s.Start(ctx, func() *exec.Cmd { return exec.Command("true") }, Options{})
	if err != nil {
		t.Fatalf("Start while another start is stuck: %v", err)
	}
	_ = p.Cmd.Wait()
	if p.PidFD >= 0 {
		unix.Close(p.PidFD)
	}
}
