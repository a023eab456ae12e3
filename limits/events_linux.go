//go:build linux

package limits

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// eventFiles maps the watched cgroup files to the counters reported.
var eventFiles = []struct {
	file  string
	keys  map[string]EventKind
	limit string
}{
	{"memory.events", map[string]EventKind{"oom_kill": EventOOMKill, "oom_group_kill": EventOOMGroupKill}, "memory.max"},
	{"pids.events", map[string]EventKind{"max": EventPidsMax}, "pids.max"},
}

// Watcher reports increases of a run cgroup's memory.events and
// pids.events counters. It waits on inotify (the kernel notifies those
// files when they change), never polls, and makes a last check when
// stopped so that an OOM kill that ended the run is not missed.
type Watcher struct {
	runID string
	dir   string
	emit  func(Event)

	mu      sync.Mutex // serialises check and flush
	last    map[EventKind]uint64
	pending map[EventKind]*Event // increases held back by the rate limit
	emitted map[EventKind]time.Time
	timer   *time.Timer
	stopped bool

	inotify  *os.File // non-blocking: waited on by the netpoller, no thread
	done     chan struct{}
	stopOnce sync.Once
}

// Watch watches dir for limit events; it returns nil when dir
// has none of the event files (their controllers are not enabled).
func Watch(runID, dir string, emit func(Event)) (*Watcher, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	n := 0
	for _, f := range eventFiles {
		_, err := unix.InotifyAddWatch(ifd, filepath.Join(dir, f.file), unix.IN_MODIFY)
		if err == nil {
			n++
		} else if !errors.Is(err, unix.ENOENT) {
			unix.Close(ifd)
			return nil, fmt.Errorf("inotify_add_watch %s: %w", f.file, err)
		}
	}
	if n == 0 {
		unix.Close(ifd)
		return nil, nil
	}
	w := &Watcher{runID: runID, dir: dir, emit: emit, last: map[EventKind]uint64{},
		pending: map[EventKind]*Event{}, emitted: map[EventKind]time.Time{},
		inotify: os.NewFile(uintptr(ifd), "inotify"), done: make(chan struct{})}
	w.check(false) // baseline
	go w.loop()
	return w, nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	var buf [4096]byte
	for {
		// Returns an error once stop closes the file.
		if _, err := w.inotify.Read(buf[:]); err != nil {
			return
		}
		w.check(true)
	}
}

// eventInterval is the least time between two reports of one kind: a fork
// bomb at pids.max changes pids.events thousands of times a second. Later
// increases are added up and reported when the interval is over (and at
// stop).
const eventInterval = time.Second

// check reads the counters and reports their increases (emit false: only
// record the baseline; final: report everything held back, now).
func (w *Watcher) check(emit bool) { w.checkFinal(emit, false) }

func (w *Watcher) checkFinal(emit, final bool) {
	w.mu.Lock()
	var out []Event
	now := time.Now()
	for _, f := range eventFiles {
		kv := readKV(filepath.Join(w.dir, f.file))
		var limit string
		for key, kind := range f.keys {
			v := kv[key]
			if v == nil || *v <= w.last[kind] {
				continue
			}
			delta := *v - w.last[kind]
			w.last[kind] = *v
			if !emit || w.emit == nil {
				continue
			}
			if limit == "" {
				limit = strings.TrimSpace(string(readAll(filepath.Join(w.dir, f.limit))))
			}
			if p := w.pending[kind]; p != nil {
				p.Count += delta
				p.Total, p.Time, p.Limit = *v, now, limit
			} else {
				w.pending[kind] = &Event{RunID: w.runID, Kind: kind, Count: delta, Total: *v, Time: now, Limit: limit}
			}
		}
	}
	var wait time.Duration
	for kind, p := range w.pending {
		if next := w.emitted[kind].Add(eventInterval); final || !now.Before(next) {
			out = append(out, *p)
			delete(w.pending, kind)
			w.emitted[kind] = now
		} else if d := next.Sub(now); wait == 0 || d < wait {
			wait = d
		}
	}
	if wait > 0 && w.timer == nil && !w.stopped {
		w.timer = time.AfterFunc(wait, func() {
			w.mu.Lock()
			w.timer = nil
			w.mu.Unlock()
			w.check(true)
		})
	}
	w.mu.Unlock()
	// Outside the lock: the callback may take its time.
	for _, e := range out {
		w.emit(e)
	}
}

// stop ends the watcher after a final check that reports everything held
// back. The cgroup must still exist
// for the final check to see anything. Idempotent.
func (w *Watcher) Stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() {
		w.inotify.Close()
		<-w.done
		w.mu.Lock()
		w.stopped = true
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
		w.mu.Unlock()
		w.checkFinal(true, true)
	})
}
