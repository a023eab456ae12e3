//go:build linux

package jail_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/spec"
)

// waitEvent reads s until an event of type typ of run, up to d.
func waitEvent(t *testing.T, s *client.EventStream, typ, run string, d time.Duration) (api.Event, bool) {
	t.Helper()
	got := make(chan api.Event, 1)
	go func() {
		for {
			ev, err := s.Next()
			if err != nil {
				close(got)
				return
			}
			if ev.Type == typ && ev.Run == run {
				got <- ev
				return
			}
		}
	}()
	select {
	case ev, ok := <-got:
		return ev, ok
	case <-time.After(d):
		return api.Event{}, false
	}
}

// The daemon's event stream carries a run's OOM kills and forks refused
// at pids.max, as `snakepit run` reports them on stderr.
func TestVMDaemonLimitEvents(t *testing.T) {
	testenv.RequireControllers(t, "memory", "pids")
	d := startTestDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := d.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// memory.max: the hog is OOM-killed.
	var run api.Run
	if st, e := d.post(t, api.PathRuns, `{"limits":{"memory_max":"48M"}}`, &run); st != 201 {
		t.Fatalf("create: %d %+v", st, e)
	}
	if _, err := d.c.StartWorker(ctx, run.ID, spec.Worker{Argv: []string{selfExe}, Env: helperEnvFor("hog")}); err != nil {
		t.Fatal(err)
	}
	ev, ok := waitEvent(t, s, api.EventOOMKill, run.ID, 60*time.Second)
	if !ok {
		t.Fatalf("no %s event of run %s", api.EventOOMKill, run.ID)
	}
	if ev.Count < 1 || ev.Total < ev.Count || ev.Limit != "50331648" || ev.Message == "" {
		t.Errorf("oom_kill event %+v", ev)
	}
	t.Logf("event: %+v", ev)
	if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
		t.Errorf("delete: %v", err)
	}

	// pids.max: a bounded fork bomb.
	if st, e := d.post(t, api.PathRuns, `{"limits":{"pids_max":16}}`, &run); st != 201 {
		t.Fatalf("create: %d %+v", st, e)
	}
	if _, err := d.c.StartWorker(ctx, run.ID, spec.Worker{Argv: []string{"sh", "-c",
		`i=0; while [ $i -lt 200 ]; do (sleep 1000 &) 2>/dev/null; i=$((i+1)); done; exec sleep 1000`}}); err != nil {
		t.Fatal(err)
	}
	ev, ok = waitEvent(t, s, api.EventPidsMax, run.ID, 60*time.Second)
	if !ok {
		t.Fatalf("no %s event of run %s", api.EventPidsMax, run.ID)
	}
	if ev.Count < 1 || ev.Limit != "16" || ev.Message == "" {
		t.Errorf("pids_max event %+v", ev)
	}
	t.Logf("event: %+v", ev)
	if _, err := d.c.DeleteRun(ctx, run.ID, time.Second); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// More runs with limits than a user may have inotify instances
// (fs.inotify.max_user_instances, 128 by default): the daemon watches every
// run's limit events through one instance, creating none fails, and the
// newest run's events still reach the stream.
func TestVMDaemonManyWatchedRuns(t *testing.T) {
	testenv.RequireControllers(t, "pids")
	d := startTestDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	if err != nil {
		t.Fatal(err)
	}
	instances, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	n := min(instances+8, 400)
	var run api.Run
	for i := range n {
		if st, e := d.post(t, api.PathRuns, `{"limits":{"pids_max":16}}`, &run); st != 201 {
			t.Fatalf("create %d of %d (max_user_instances %d): %d %+v", i+1, n, instances, st, e)
		}
	}
	if got := testenv.FilesOpen(d.pid, "anon_inode:inotify"); got != 1 {
		t.Errorf("the daemon holds %d inotify instances for %d watched runs, want 1", got, n)
	}
	s, err := d.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := d.c.StartWorker(ctx, run.ID, spec.Worker{Argv: []string{"sh", "-c",
		`i=0; while [ $i -lt 100 ]; do (sleep 1000 &) 2>/dev/null; i=$((i+1)); done; exec sleep 1000`}}); err != nil {
		t.Fatal(err)
	}
	ev, ok := waitEvent(t, s, api.EventPidsMax, run.ID, 60*time.Second)
	if !ok {
		t.Fatalf("no %s event of run %s, the %dth", api.EventPidsMax, run.ID, n)
	}
	if ev.Count < 1 || ev.Limit != "16" {
		t.Errorf("pids_max event %+v", ev)
	}
	t.Logf("%d runs (max_user_instances %d); event of the last: %+v", n, instances, ev)
	// The daemon's SIGTERM at cleanup tears the runs down.
}
