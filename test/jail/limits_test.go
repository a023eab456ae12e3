//go:build linux

package jail_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// controllerAvailable reports whether a run could get ctrl here.
func controllerAvailable(t *testing.T, ctrl string) bool {
	t.Helper()
	probe, err := limits.Probe("")
	if err != nil {
		t.Fatalf("ProbeLimits: %v", err)
	}
	return probe[ctrl] == nil
}

// On a host without the memory controller on cgroup2 (this hybrid host),
// --memory-max fails before anything is created, with one line naming the
// controller and why.
func TestMemoryMaxUnavailableFailsClearly(t *testing.T) {
	testenv.RequireCgroup2(t)
	if controllerAvailable(t, "memory") {
		t.Skip("the memory controller is available here; this test is for hosts without it")
	}
	id := newRunID(t)
	marker := filepath.Join(t.TempDir(), "ran")
	res := runCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--memory-max", "64M", "--", "touch", marker)
	if res.code != 125 {
		t.Errorf("exit %d, want 125; stderr: %s", res.code, res.stderr)
	}
	msg := strings.TrimSpace(res.stderr)
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "controller memory unavailable") ||
		!strings.Contains(msg, "--memory-max") {
		t.Errorf("want one line naming the memory controller and --memory-max, got:\n%s", res.stderr)
	}
	if m, _ := cgroup.FindMount(); m.Mode == cgroup.Hybrid && !strings.Contains(msg, "v1 hierarchy") {
		t.Errorf("hybrid host: the reason should name the v1 hierarchy: %s", msg)
	}
	t.Logf("message: %s", msg)
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran")
	}
	if g, err := inventory.Lookup(id); err == nil {
		t.Errorf("run cgroup %s was created", g.Path())
	}
}

// --best-effort-limits runs anyway, with a warning.
func TestBestEffortLimitsWarns(t *testing.T) {
	testenv.RequireCgroup2(t)
	if controllerAvailable(t, "memory") && controllerAvailable(t, "pids") {
		t.Skip("memory and pids are available here: nothing to warn about")
	}
	id := newRunID(t)
	res := runCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--best-effort-limits",
		"--memory-max", "64M", "--pids-max", "100", "--", "echo", "ran")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "ran" {
		t.Fatalf("exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stderr, "warning:") || !strings.Contains(res.stderr, "unavailable") {
		t.Errorf("want a warning on stderr, got: %q", res.stderr)
	}
	t.Logf("stderr: %s", res.stderr)
}

// Bad limit values are usage errors.
func TestBadLimitFlags(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, args := range [][]string{
		{"--memory-max", "lots"}, {"--pids-max", "-3"}, {"--cpu-max", "0"}, {"--cpu-weight", "20000"},
		{"--ready", "maybe"}, {"--ready-timeout", "1s"}, {"--ready-fd", "1"},
	} {
		res := runCLI(t, nil, append(append([]string{"run", "--no-guardian"}, args...), "--", "true")...)
		if res.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr %s", args, res.code, res.stderr)
		}
	}
}

// Stats work without any controller: cpu.stat is a core file.
func TestStatsWithoutControllers(t *testing.T) {
	testenv.RequireCgroup2(t)
	ctx := context.Background()
	r := newRun(t, snakepit.Options{})
	w, err := r.Start(ctx, snakepit.Command{Args: []string{"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUUsageUsec == nil || *s.CPUUsageUsec == 0 {
		t.Errorf("cpu usage not reported: %+v", s)
	}
	if controllerAvailable(t, "memory") != (s.MemoryCurrent != nil) {
		t.Logf("note: memory.current %v with the memory controller available=%v", s.MemoryCurrent != nil, controllerAvailable(t, "memory"))
	}
}

// newRun creates a run with the library, torn down (and checked gone) at
// the end of the test.
func newRun(t *testing.T, opts snakepit.Options) *snakepit.Run {
	t.Helper()
	r, err := snakepit.Create(context.Background(), opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.Teardown(ctx, 0); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run cgroup %s still exists", r.CgroupPath())
		}
	})
	return r
}

// events collects a run's limit events.
type events struct {
	mu  sync.Mutex
	all []snakepit.Event
	c   chan snakepit.Event
}

func newEvents() *events { return &events{c: make(chan snakepit.Event, 64)} }

func (e *events) add(ev snakepit.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
	select {
	case e.c <- ev:
	default:
	}
}

// wait returns the first event of kind k within d.
func (e *events) wait(k snakepit.EventKind, d time.Duration) (snakepit.Event, bool) {
	e.mu.Lock()
	for _, ev := range e.all {
		if ev.Kind == k {
			e.mu.Unlock()
			return ev, true
		}
	}
	e.mu.Unlock()
	timeout := time.After(d)
	for {
		select {
		case ev := <-e.c:
			if ev.Kind == k {
				return ev, true
			}
		case <-timeout:
			return snakepit.Event{}, false
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// --- VM rig: need the memory, pids and cpu controllers ---

// The limit flags land in the run cgroup's files, with memory.oom.group=1.
func TestVMLimitsWritten(t *testing.T) {
	m := testenv.RequireControllers(t, "memory", "pids", "cpu")
	id := newRunID(t)
	res := runCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--memory-max", "96M", "--memory-high", "80M",
		"--pids-max", "77", "--cpu-max", "1.5", "--cpu-weight", "50", "--",
		"sh", "-c", `d=`+m.Path+`$(sed -n 's/^0:://p' /proc/self/cgroup); for f in memory.max memory.high memory.oom.group pids.max cpu.max cpu.weight; do echo "$f $(cat $d/$f)"; done`)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	want := "memory.max 100663296\nmemory.high 83886080\nmemory.oom.group 1\npids.max 77\ncpu.max 150000 100000\ncpu.weight 50"
	if got := strings.TrimSpace(res.stdout); got != want {
		t.Errorf("run cgroup files:\n%s\nwant:\n%s", got, want)
	}
}

// memory.max: the OOM killer takes the whole run (memory.oom.group), the
// event is reported through OnEvent and by the wrapper on stderr.
func TestVMMemoryMaxOOMKillsWholeRun(t *testing.T) {
	testenv.RequireControllers(t, "memory")
	ctx := context.Background()
	ev := newEvents()
	r := newRun(t, snakepit.Options{Limits: snakepit.Limits{MemoryMax: 48 << 20}, OnEvent: ev.add})
	// A bystander that uses no memory, then the hog.
	bystander, err := r.Start(ctx, snakepit.Command{Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	hog, err := r.Start(ctx, snakepit.Command{Args: []string{selfExe}, Env: helperEnvFor("hog")})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	st, err := hog.Wait(wctx)
	if err != nil {
		t.Fatalf("hog: %v", err)
	}
	if st.Signal != 9 {
		t.Errorf("hog ended with %v, want SIGKILL by the OOM killer", st)
	}
	bst, err := bystander.Wait(wctx)
	if err != nil {
		t.Fatalf("bystander not killed with the run (memory.oom.group): %v", err)
	}
	if bst.Signal != 9 {
		t.Errorf("bystander ended with %v, want SIGKILL", bst)
	}
	// The run cgroup empties by itself: nothing of the run survived.
	if err := r.Cgroup().WaitEmpty(wctx); err != nil {
		t.Errorf("run cgroup not empty after the OOM kill: %v", err)
	}
	e, ok := ev.wait(snakepit.EventOOMKill, 10*time.Second)
	if !ok {
		t.Fatalf("no oom_kill event; events: %+v; memory.events: %s", ev.all, readFile(t, filepath.Join(r.CgroupPath(), "memory.events")))
	}
	if e.Count < 1 || e.RunID != r.ID() {
		t.Errorf("event %+v", e)
	}
	t.Logf("event: %v; memory.events: %s", e, strings.ReplaceAll(readFile(t, filepath.Join(r.CgroupPath(), "memory.events")), "\n", ", "))
	if s, err := r.Stats(); err != nil || s.OOMKills == nil || *s.OOMKills == 0 {
		t.Errorf("Stats().OOMKills: %+v %v", s, err)
	}

	// The wrapper says so on stderr and exits 137.
	id := newRunID(t)
	res := runCLI(t, helperEnvFor("hog"), "run", "--no-guardian", "--run-id", id, "--memory-max", "48M", "--", selfExe)
	if res.code != 137 || !strings.Contains(res.stderr, "out of memory") || !strings.Contains(res.stderr, "memory.max 48M") {
		t.Errorf("snakepit run --memory-max: exit %d, stderr %q; want 137 and an out-of-memory report", res.code, res.stderr)
	}
	t.Logf("wrapper stderr: %s", strings.TrimSpace(res.stderr))
}

// pids.max stops a fork bomb, the refusals are reported, and the run is
// still torn down cleanly.
func TestVMPidsMaxStopsForkBomb(t *testing.T) {
	testenv.RequireControllers(t, "pids")
	ctx := context.Background()
	ev := newEvents()
	r := newRun(t, snakepit.Options{Limits: snakepit.Limits{PidsMax: 16}, OnEvent: ev.add})
	// A bounded bomb: 200 background sleeps, forks that fail are ignored.
	w, err := r.Start(ctx, snakepit.Command{Args: []string{"sh", "-c",
		`i=0; while [ $i -lt 200 ]; do (sleep 1000 &) 2>/dev/null; i=$((i+1)); done; echo done; exec sleep 1000`}})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := ev.wait(snakepit.EventPidsMax, 60*time.Second)
	if !ok {
		t.Fatalf("no pids_max event; pids.events: %s", readFile(t, filepath.Join(r.CgroupPath(), "pids.events")))
	}
	t.Logf("event: %v", e)
	s, err := r.Stats()
	if err != nil || s.PidsCurrent == nil || *s.PidsCurrent > 16 {
		t.Errorf("pids.current above pids.max: %+v %v", s, err)
	}
	pids, err := r.Cgroup().ProcsRecursive()
	if err != nil {
		t.Fatal(err)
	}
	// Short-lived subshells may be gone by now: pin the ones still there.
	var fds, pinned []int
	for _, pid := range pids {
		if fd, ok := pidfdIfAlive(t, pid); ok {
			fds, pinned = append(fds, fd), append(pinned, pid)
		}
	}
	pids = pinned
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rep, err := r.Teardown(tctx, time.Second)
	if err != nil {
		t.Fatalf("teardown: %v", err)
	}
	t.Logf("teardown of %d processes: %+v", len(pids), rep)
	for i, fd := range fds {
		if !reaper.PidfdExited(fd, 5*time.Second) {
			t.Errorf("PID %d survived the teardown", pids[i])
		}
	}
	if _, err := os.Stat(r.CgroupPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run cgroup still exists after teardown")
	}
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Error("worker not reaped")
	}

	// Through the wrapper: the refusals are reported on stderr.
	id := newRunID(t)
	res := runCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--pids-max", "8", "--",
		"sh", "-c", `i=0; while [ $i -lt 50 ]; do (sleep 1000 &) 2>/dev/null; i=$((i+1)); done; echo done`)
	if !strings.Contains(res.stderr, "pids.max (8) reached") {
		t.Errorf("exit %d, stderr %q: want a pids.max report", res.code, res.stderr)
	}
	t.Logf("wrapper: exit %d, stderr: %s", res.code, strings.TrimSpace(res.stderr))
}

// cpu.max throttles a busy loop (cpu.stat nr_throttled > 0).
func TestVMCPUMaxThrottles(t *testing.T) {
	testenv.RequireControllers(t, "cpu")
	ctx := context.Background()
	c, err := snakepit.ParseCPUMax("0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(t, snakepit.Options{Limits: snakepit.Limits{CPUMax: c}})
	if got := readFile(t, filepath.Join(r.CgroupPath(), "cpu.max")); got != "10000 100000" {
		t.Errorf("cpu.max %q", got)
	}
	if _, err := r.Start(ctx, snakepit.Command{Args: []string{"sh", "-c", "while :; do :; done"}}); err != nil {
		t.Fatal(err)
	}
	var s snakepit.Stats
	if !testenv.Within(60*time.Second, func() bool {
		var err error
		if s, err = r.Stats(); err != nil {
			t.Fatal(err)
		}
		return s.CPUThrottled != nil && *s.CPUThrottled > 0
	}) {
		t.Fatalf("not throttled after 60 s: cpu.stat %s", readFile(t, filepath.Join(r.CgroupPath(), "cpu.stat")))
	}
	t.Logf("nr_throttled %d, throttled %d us, usage %d us", *s.CPUThrottled, deref(s.CPUThrottledUsec), deref(s.CPUUsageUsec))
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// `snakepit create` takes the run's limits too: they are on the run
// cgroup before anything joins it (snakepit exec), and a bad value is a
// usage error that creates nothing.
func TestVMCreateLimits(t *testing.T) {
	testenv.RequireControllers(t, "memory", "pids")
	id := runid.Generate()
	t.Cleanup(func() { cleanupRun(t, id, false) })
	if res := runCLI(t, nil, "create", "--run-id", id, "--memory-max", "lots"); res.code != 2 {
		t.Fatalf("create --memory-max lots: exit %d, want 2 (usage): %s", res.code, res.stderr)
	}
	if _, err := inventory.Lookup(id); err == nil {
		t.Fatal("a rejected create made a run")
	}
	res := runCLI(t, nil, "create", "--run-id", id, "--no-guardian", "--memory-max", "64M", "--pids-max", "33")
	if res.code != 0 {
		t.Fatalf("create: exit %d: %s", res.code, res.stderr)
	}
	g, err := inventory.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{"memory.max": "67108864", "pids.max": "33", "memory.oom.group": "1"} {
		b, err := os.ReadFile(filepath.Join(g.Path(), file))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if res := runCLI(t, nil, "kill", "--grace", "0s", id); res.code != 0 {
		t.Fatalf("kill: exit %d: %s", res.code, res.stderr)
	}
}
