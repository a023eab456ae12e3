//go:build linux

package limits

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

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

	wds      []int32        // its watches in the shared instance
	checking sync.WaitGroup // checks the shared reader has begun
	stopOnce sync.Once
}

// Watch watches dir for limit events; it returns nil when dir
// has none of the event files (their controllers are not enabled).
func Watch(runID, dir string, emit func(Event)) (*Watcher, error) {
	w := &Watcher{runID: runID, dir: dir, emit: emit, last: map[EventKind]uint64{},
		pending: map[EventKind]*Event{}, emitted: map[EventKind]time.Time{}}
	// Only the files there are: a host without the controllers (or a run
	// whose parent does not pass them down) costs no inotify instance and
	// no reader, which a short-lived `snakepit run` would pay for nothing.
	var files []string
	for _, f := range eventFiles {
		if p := filepath.Join(dir, f.file); unix.Access(p, unix.F_OK) == nil {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		return nil, nil
	}
	ok, err := notify.add(w, files)
	if err != nil || !ok {
		return nil, err
	}
	return w, nil
}

// notify is the process's one inotify instance, shared by every Watcher:
// instances are limited per user (fs.inotify.max_user_instances, 128 by
// default), and a daemon watches each of its thousands of runs. Watches
// (fs.inotify.max_user_watches) are plentiful.
var notify = &inotifyHub{watchers: map[int32][]*Watcher{}}

type inotifyHub struct {
	mu sync.Mutex
	// fd is the instance, made at the first watch and never closed; file
	// is the same fd, non-blocking, read by one goroutine on the
	// netpoller (no thread).
	fd       int
	file     *os.File
	watchers map[int32][]*Watcher
}

// add watches files for w, and takes w's baseline under the hub's lock, so
// that the reader checks w only against it. It reports false when none of
// the files exists.
func (h *inotifyHub) add(w *Watcher, files []string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.file == nil {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return false, fmt.Errorf("inotify_init1: %w", err)
		}
		h.fd, h.file = fd, os.NewFile(uintptr(fd), "inotify")
		go h.read(h.file)
	}
	for _, path := range files {
		wd, err := unix.InotifyAddWatch(h.fd, path, unix.IN_MODIFY)
		switch {
		case err == nil:
			w.wds = append(w.wds, int32(wd))
			h.watchers[int32(wd)] = append(h.watchers[int32(wd)], w)
		case errors.Is(err, unix.ENOENT):
		default:
			h.removeLocked(w)
			return false, fmt.Errorf("inotify_add_watch %s: %w", path, err)
		}
	}
	if len(w.wds) == 0 {
		return false, nil
	}
	w.check(false) // baseline
	return true, nil
}

// remove ends w's watches; once it returns, the reader begins no check of w.
func (h *inotifyHub) remove(w *Watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(w)
}

func (h *inotifyHub) removeLocked(w *Watcher) {
	for _, wd := range w.wds {
		ws := slices.DeleteFunc(h.watchers[wd], func(x *Watcher) bool { return x == w })
		if len(ws) > 0 {
			h.watchers[wd] = ws // the same file watched twice shares its watch
			continue
		}
		delete(h.watchers, wd)
		// EINVAL once the cgroup is gone: the kernel dropped the watch.
		_, _ = unix.InotifyRmWatch(h.fd, uint32(wd))
	}
	w.wds = nil
}

// read checks the watchers whose files changed, for the life of the
// process.
func (h *inotifyHub) read(f *os.File) {
	var buf [4096]byte
	for {
		n, err := f.Read(buf[:])
		if err != nil {
			return
		}
		var changed []*Watcher
		seen := map[*Watcher]bool{}
		add := func(ws []*Watcher) {
			for _, w := range ws {
				if !seen[w] {
					seen[w] = true
					w.checking.Add(1)
					changed = append(changed, w)
				}
			}
		}
		h.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				// The queue (fs.inotify.max_queued_events) overflowed,
				// say under fork bombs in many runs: later changes of
				// any file may be lost, so every watcher looks.
				for _, ws := range h.watchers {
					add(ws)
				}
			case ev.Mask&unix.IN_IGNORED != 0:
				// The file is gone (its cgroup was removed) and the
				// kernel dropped the watch: nothing more to read.
				delete(h.watchers, ev.Wd)
			default:
				add(h.watchers[ev.Wd])
			}
		}
		h.mu.Unlock()
		for _, w := range changed {
			w.check(true)
			w.checking.Done()
		}
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

// Stop ends the watcher after a final check that reports everything held
// back. The cgroup must still exist for the final check to see anything.
// Idempotent.
func (w *Watcher) Stop() {
	if w == nil {
		return
	}
	w.stopOnce.Do(func() {
		notify.remove(w)
		w.checking.Wait()
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
