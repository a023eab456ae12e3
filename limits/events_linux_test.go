//go:build linux

package limits

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snakepit/snakepit/internal/testenv"
)

// More watchers than a user may have inotify instances (128 by default)
// share one instance, and each still reports its own run's events.
func TestWatchersShareOneInotify(t *testing.T) {
	const runs = 300
	events := make(chan Event, runs)
	ws := make([]*Watcher, 0, runs)
	t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
	dirs := make([]string, runs)
	for i := range dirs {
		dirs[i] = t.TempDir()
		for f, v := range map[string]string{"memory.events": "oom_kill 0\noom_group_kill 0\n", "pids.events": "max 0\n", "pids.max": "20\n"} {
			if err := os.WriteFile(filepath.Join(dirs[i], f), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		w, err := Watch(fmt.Sprintf("r%06d", i), dirs[i], func(e Event) { events <- e })
		if err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
		if w == nil {
			t.Fatalf("watcher %d: nil for a directory with the event files", i)
		}
		ws = append(ws, w)
	}
	if n := testenv.FilesOpen(os.Getpid(), "anon_inode:inotify"); n != 1 {
		t.Fatalf("%d watchers hold %d inotify instances, want 1", runs, n)
	}
	// Every run's counter goes up by its own amount.
	for i, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "pids.events"), []byte(fmt.Sprintf("max %d\n", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for len(seen) < runs {
		select {
		case e := <-events:
			var i int
			if _, err := fmt.Sscanf(e.RunID, "r%06d", &i); err != nil {
				t.Fatalf("event of an unknown run: %+v", e)
			}
			if e.Kind != EventPidsMax || e.Count != uint64(i+1) || e.Total != uint64(i+1) || e.Limit != "20" {
				t.Fatalf("run %d: got %+v, want pids_max count %d limit 20", i, e, i+1)
			}
			if seen[e.RunID] {
				t.Fatalf("run %d reported twice: %+v", i, e)
			}
			seen[e.RunID] = true
		case <-timeout:
			t.Fatalf("not within 30s: events of %d of %d runs", len(seen), runs)
		}
	}
	// A stopped watcher reports nothing more, and the others still work.
	ws[0].Stop()
	if err := os.WriteFile(filepath.Join(dirs[0], "pids.events"), []byte("max 99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirs[1], "memory.events"), []byte("oom_kill 1\noom_group_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, events, "the oom_kill of run r000001"); e.RunID != "r000001" || e.Kind != EventOOMKill || e.Count != 1 {
		t.Fatalf("got %+v, want run r000001's oom_kill", e)
	}
	// Run 0's write came first: had its watcher reported it, that event
	// would have been read before run 1's.
	select {
	case e := <-events:
		t.Fatalf("unexpected event after the stop: %+v", e)
	default:
	}
}

// A directory without the event files (controllers not enabled) gets no
// watcher and no watch.
func TestWatchWithoutEventFiles(t *testing.T) {
	w, err := Watch("rnofile", t.TempDir(), func(Event) {})
	if err != nil || w != nil {
		t.Fatalf("Watch of a directory without event files: %v, %v; want nil, nil", w, err)
	}
	notify.mu.Lock()
	defer notify.mu.Unlock()
	for wd, ws := range notify.watchers {
		for _, x := range ws {
			if strings.HasPrefix(x.runID, "rnofile") {
				t.Fatalf("watch %d kept for a directory without event files", wd)
			}
		}
	}
}

// When the shared queue overflows (fs.inotify.max_queued_events), the
// changes after it are lost from the queue; every watcher then looks, so
// the increase of a run whose change was lost is still reported without
// waiting for its Stop.
func TestWatchersLookAfterOverflow(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("no max_queued_events: %v", err)
	}
	var queue int
	if _, err := fmt.Sscan(string(b), &queue); err != nil || queue > 1<<17 {
		t.Skipf("max_queued_events %q: too large to overflow here", strings.TrimSpace(string(b)))
	}
	events := make(chan Event, 16)
	dirs := [3]string{t.TempDir(), t.TempDir(), t.TempDir()}
	var ws []*Watcher
	t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
	for i, d := range dirs {
		for f, v := range map[string]string{"memory.events": "oom_kill 0\noom_group_kill 0\n", "pids.events": "max 0\n", "pids.max": "20\n"} {
			if err := os.WriteFile(filepath.Join(d, f), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		w, err := Watch(fmt.Sprintf("r%06d", i), d, func(e Event) { events <- e })
		if err != nil || w == nil {
			t.Fatalf("watcher %d: %v, %v", i, w, err)
		}
		ws = append(ws, w)
	}
	// The reader takes the hub's lock after each read: held here, the
	// queue fills. Writes to two runs' files in turn are not merged, and
	// change no counter.
	notify.mu.Lock()
	files := []*os.File{}
	for _, d := range dirs[:2] {
		f, err := os.OpenFile(filepath.Join(d, "memory.events"), os.O_WRONLY, 0)
		if err != nil {
			notify.mu.Unlock()
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	for i := 0; i < queue+1000; i++ {
		if _, err := files[i%2].WriteAt([]byte("oom_kill 0\n"), 0); err != nil {
			notify.mu.Unlock()
			t.Fatal(err)
		}
	}
	// The third run's change, after the overflow: lost from the queue.
	if err := os.WriteFile(filepath.Join(dirs[2], "pids.events"), []byte("max 5\n"), 0o644); err != nil {
		notify.mu.Unlock()
		t.Fatal(err)
	}
	notify.mu.Unlock()
	if e := nextEvent(t, events, "the change made after the queue overflowed"); e.RunID != "r000002" || e.Kind != EventPidsMax || e.Total != 5 {
		t.Fatalf("got %+v, want run r000002's pids_max at 5", e)
	}
}

// nextEvent waits for the next event, up to 30 s.
func nextEvent(t *testing.T, events <-chan Event, what string) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(30 * time.Second):
		t.Fatalf("not within 30s: %s", what)
		return Event{}
	}
}
