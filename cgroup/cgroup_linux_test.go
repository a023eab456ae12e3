//go:build linux

package cgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// These tests run on a temp dir standing in for a cgroup: the package only
// uses ordinary file operations plus inotify, so its logic (parsing,
// fallback selection, waiting) is testable without root. The real
// cgroupfs is exercised by the root package's integration tests.

// fakeGroup makes a directory with the interface files the package reads.
func fakeGroup(t *testing.T, events string, files ...string) *Group {
	t.Helper()
	dir := filepath.Join(t.TempDir(), Prefix+"abc1234")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "cgroup.events"), events)
	write(t, filepath.Join(dir, "cgroup.procs"), "")
	for _, f := range files {
		write(t, filepath.Join(dir, f), "")
	}
	return &Group{path: dir}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseProcCgroup(t *testing.T) {
	hybrid := "9:name=systemd:/\n4:memory:/x\n1:cpu:/\n0::/snakepit/snakepit-abc1234\n"
	if p, err := ParseProcCgroup([]byte(hybrid)); err != nil || p != "/snakepit/snakepit-abc1234" {
		t.Fatalf("hybrid: %q, %v", p, err)
	}
	if p, err := ParseProcCgroup([]byte("0::/\n")); err != nil || p != "/" {
		t.Fatalf("root: %q, %v", p, err)
	}
	if _, err := ParseProcCgroup([]byte("4:memory:/x\n")); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("v1 only: %v", err)
	}
}

func TestParseEvents(t *testing.T) {
	e := parseEvents([]byte("populated 1\nfrozen 0\n"))
	if !e.Populated || e.Frozen {
		t.Fatalf("%+v", e)
	}
	e = parseEvents([]byte("populated 0\nfrozen 1\n"))
	if e.Populated || !e.Frozen {
		t.Fatalf("%+v", e)
	}
}

func TestFindMountNotCgroup2(t *testing.T) {
	if _, err := findMount(t.TempDir()); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("findMount(tmp) = %v, want ErrNoCgroup2", err)
	}
}

func TestCreateExistsRemove(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "snakepit")
	g, err := Create(parent, Prefix+"abc1234")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(parent, Prefix+"abc1234"); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	if err := os.Mkdir(filepath.Join(g.Path(), "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := g.Remove(context.Background()); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(g.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("still there: %v", err)
	}
	// Removing what is gone is not an error (a run removed by hand).
	if err := g.Remove(context.Background()); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	if _, err := Open(g.Path()); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Open of removed group: %v", err)
	}
}

// TestWaitEmptyWakesOnEvent: the wait ends when cgroup.events changes to
// "populated 0", and respects its context otherwise.
func TestWaitEmptyWakesOnEvent(t *testing.T) {
	g := fakeGroup(t, "populated 1\nfrozen 0\n")
	go func() {
		time.Sleep(30 * time.Millisecond)
		write(t, filepath.Join(g.Path(), "cgroup.events"), "populated 0\nfrozen 0\n")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatalf("WaitEmpty: %v", err)
	}

	g2 := fakeGroup(t, "populated 1\n")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := g2.WaitEmpty(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEmpty on a busy group: %v, want deadline exceeded", err)
	}
}

// TestKillFallsBackOnlyOnENOENT: without cgroup.kill the freeze path is
// used (and cached per mount); with cgroup.kill present, it is written.
func TestKillFallsBackOnlyOnENOENT(t *testing.T) {
	ctx := context.Background()
	g := fakeGroup(t, "populated 0\nfrozen 0\n", "cgroup.kill")
	m, err := g.Kill(ctx)
	if err != nil || m != KillCgroupKill {
		t.Fatalf("with cgroup.kill: %v, %v", m, err)
	}
	if b, _ := os.ReadFile(filepath.Join(g.Path(), "cgroup.kill")); string(b) != "1" {
		t.Fatalf("cgroup.kill holds %q", b)
	}

	old := g.Path()
	g2 := fakeGroup(t, "populated 0\nfrozen 0\n", "cgroup.freeze")
	m, err = g2.Kill(ctx)
	if err != nil || m != KillFreeze {
		t.Fatalf("without cgroup.kill: %v, %v (other group %s)", m, err, old)
	}
	// The freeze was undone: frozen tasks would otherwise never die.
	if b, _ := os.ReadFile(filepath.Join(g2.Path(), "cgroup.freeze")); string(b) != "0" {
		t.Fatalf("cgroup.freeze left at %q", b)
	}

	g3 := fakeGroup(t, "populated 0\n")
	if _, err := g3.Kill(ctx); !errors.Is(err, ErrNoKill) {
		t.Fatalf("neither file: %v, want ErrNoKill", err)
	}
	// A group that is gone is ErrNotExist, not a reason to fall back.
	gone := &Group{path: filepath.Join(t.TempDir(), "gone")}
	if _, err := gone.Kill(ctx); !errors.Is(err, ErrNotExist) && !errors.Is(err, ErrNoKill) {
		t.Fatalf("gone group: %v", err)
	}
}

func TestProcsParsing(t *testing.T) {
	g := fakeGroup(t, "populated 1\n")
	write(t, filepath.Join(g.Path(), "cgroup.procs"), "12\n34\n")
	sub := filepath.Join(g.Path(), "sub")
	os.Mkdir(sub, 0o755)
	write(t, filepath.Join(sub, "cgroup.procs"), "56\n")
	pids, err := g.ProcsRecursive()
	if err != nil || len(pids) != 3 || pids[0] != 12 || pids[2] != 56 {
		t.Fatalf("ProcsRecursive = %v, %v", pids, err)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 511, 512, 513, 10000} {
		want := bytes.Repeat([]byte("1234567\n"), n/8+1)[:n]
		p := filepath.Join(dir, fmt.Sprintf("f%d", n))
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("ReadFile of %d bytes: got %d bytes, differing", n, len(got))
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// holds decides whether a PID read from cgroup.procs is still the group's
// when it is signalled: its cgroup (as /proc/PID/cgroup names it) must be
// the group or one below it.
func TestHolds(t *testing.T) {
	m, err := FindMount()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	g := At(filepath.Join(m.Path, "snakepit", Prefix+"abc1234"))
	for rel, want := range map[string]bool{
		"/snakepit/" + Prefix + "abc1234":       true,
		"/snakepit/" + Prefix + "abc1234/sub":   true,
		"/snakepit/" + Prefix + "abc12345":      false,
		"/snakepit":                             false,
		"/":                                     false,
		"/other/snakepit/" + Prefix + "abc1234": false,
	} {
		if got := g.holds(rel); got != want {
			t.Errorf("holds(%q) = %v, want %v", rel, got, want)
		}
	}
}

// WaitKilled kills again while the group stays populated (a process that
// joined after the kill), and returns once it is empty.
func TestWaitKilledKillsAgain(t *testing.T) {
	defer func(f, m time.Duration) { rekillFirst, rekillMax = f, m }(rekillFirst, rekillMax)
	rekillFirst, rekillMax = time.Millisecond, 2*time.Millisecond
	g := fakeGroup(t, "populated 1\nfrozen 0\n")
	kills := 0
	err := g.WaitKilled(context.Background(), func() error {
		if kills++; kills == 3 {
			write(t, filepath.Join(g.path, "cgroup.events"), "populated 0\nfrozen 0\n")
		}
		return nil
	})
	if err != nil || kills != 3 {
		t.Fatalf("WaitKilled = %v after %d kills, want nil after 3", err, kills)
	}

	// A kill that finds the group gone ends the wait with its error.
	g = fakeGroup(t, "populated 1\nfrozen 0\n")
	err = g.WaitKilled(context.Background(), func() error { return ErrNotExist })
	if !errors.Is(err, ErrNotExist) {
		t.Fatalf("WaitKilled with the group gone = %v, want ErrNotExist", err)
	}
}
