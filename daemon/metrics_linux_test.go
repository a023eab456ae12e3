package daemon_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/internal/testenv"
)

// Test IDs of the metrics readers (not in /etc/passwd).
const (
	metricsGroup = 64010 // the --metrics-group
	metricsUID   = 64011 // in metricsGroup only
)

// scrape fetches GET /metrics as root and parses it with the Prometheus
// text parser.
func scrape(t *testing.T, socket string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := raw(t, socket, "GET", api.PathMetrics, "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// metricValue is the value of the sample of name whose labels include
// labels (name=value pairs); ok false when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func wantMetric(t *testing.T, fams map[string]*dto.MetricFamily, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := metricValue(fams, name, labels...)
	if !ok {
		t.Errorf("%s%v: missing", name, labels)
	} else if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// TestMetrics: after runs come and go, GET /metrics parses and its
// counters and gauges match what was done; per-run series exist for live
// runs only; the endpoint is root's and --metrics-group's, nobody else's.
func TestMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	d := startDaemon(t, daemonOpts{args: []string{"--group", strconv.Itoa(testGroup),
		"--metrics-group", strconv.Itoa(metricsGroup), "--socket-mode", "0666"}})
	ctx := ctxT(t, 90*time.Second)

	const n = 3
	var ids []string
	for range n {
		r, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
		for _, argv := range [][]string{{"true"}, {"sleep", "60"}} {
			if _, err := d.c.StartWorker(ctx, r.ID, api.StartWorkerRequest{Argv: argv}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One run ignores SIGTERM: its teardown kills after the grace.
	stubborn, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.StartWorker(ctx, stubborn.ID, api.StartWorkerRequest{Argv: []string{"sh", "-c", `trap "" TERM; while :; do sleep 1; done`}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the true workers exited", func() bool {
		v, _ := metricValue(scrape(t, d.socket), "snakepit_workers")
		return v == n+1
	})
	live := scrape(t, d.socket)
	wantMetric(t, live, n+1, "snakepit_runs")
	wantMetric(t, live, n+1, "snakepit_runs_created_total", "mechanism", "cgroup")
	wantMetric(t, live, 0, "snakepit_runs_created_total", "mechanism", "posix")
	wantMetric(t, live, 2*n+1, "snakepit_workers_started_total")
	for _, id := range ids {
		wantMetric(t, live, 1, "snakepit_run_workers", "run", id)
		if _, ok := metricValue(live, "snakepit_run_cpu_seconds_total", "run", id); !ok {
			t.Errorf("no snakepit_run_cpu_seconds_total of live run %s", id)
		}
	}

	for _, id := range ids {
		if _, err := d.c.DeleteRun(ctx, id, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	td, err := d.c.DeleteRun(ctx, stubborn.ID, 200*time.Millisecond)
	if err != nil || !td.Killed {
		t.Fatalf("stubborn teardown %+v, %v: want killed after the grace", td, err)
	}

	after := scrape(t, d.socket)
	wantMetric(t, after, 0, "snakepit_runs")
	wantMetric(t, after, 0, "snakepit_workers")
	wantMetric(t, after, n+1, "snakepit_runs_created_total", "mechanism", "cgroup")
	wantMetric(t, after, n+1, "snakepit_runs_torn_down_total", "mechanism", "cgroup")
	wantMetric(t, after, 0, "snakepit_runs_torn_down_total", "mechanism", "posix")
	wantMetric(t, after, n+1, "snakepit_teardown_duration_seconds")
	wantMetric(t, after, 1, "snakepit_teardown_kills_total")
	wantMetric(t, after, 2*n+1, "snakepit_workers_started_total")
	wantMetric(t, after, 2*n+1, "snakepit_workers_exited_total")
	wantMetric(t, after, 0, "snakepit_escaped_workers_total")
	wantMetric(t, after, 0, "snakepit_stale_runs_removed_total")
	wantMetric(t, after, 0, "snakepit_limit_events_total", "kind", "oom_kill")
	wantMetric(t, after, 0, "snakepit_scrape_runs_skipped")
	if f := after["snakepit_run_workers"]; f != nil && len(f.GetMetric()) > 0 {
		t.Errorf("per-run series of runs torn down: %v", f.GetMetric())
	}
	if _, ok := metricValue(after, "go_goroutines"); !ok {
		t.Error("no go_goroutines (Go collector)")
	}

	// Who may read it.
	get := helperReq{"GET", api.PathMetrics, ""}
	status := helperReq{"GET", api.PathStatus, ""}
	res := asUser(t, d.socket, otherUID, otherUID, nil, get)
	wantStatus(t, "non-member GET /metrics", res[0], http.StatusForbidden)
	res = asUser(t, d.socket, memberUID, memberGID, []int{testGroup}, get)
	wantStatus(t, "--group member GET /metrics", res[0], http.StatusForbidden)
	res = asUser(t, d.socket, metricsUID, metricsUID, []int{metricsGroup}, get, status)
	wantStatus(t, "--metrics-group member GET /metrics", res[0], http.StatusOK)
	if !strings.Contains(res[0].Body, "snakepit_runs_created_total") {
		t.Errorf("metrics as a --metrics-group member: %.200s", res[0].Body)
	}
	wantStatus(t, "--metrics-group member GET /v1/status", res[1], http.StatusForbidden)
	res = asUser(t, d.socket, metricsUID, metricsGroup, nil, get)
	wantStatus(t, "--metrics-group as primary group GET /metrics", res[0], http.StatusOK)
	if code, _ := raw(t, d.socket, "POST", api.PathMetrics, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", code)
	}
}

// TestLifecycleLog: the daemon logs run and worker lifecycle at INFO with
// run, worker, pid and uid fields.
func TestLifecycleLog(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	r, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.c.StartWorker(ctx, r.ID, api.StartWorkerRequest{Argv: []string{"sh", "-c", "exit 7"}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "worker exits", func() bool {
		got, err := d.c.GetRun(ctx, r.ID)
		return err == nil && got.Workers[0].State == api.WorkerExited
	})
	if _, err := d.c.DeleteRun(ctx, r.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	d.stop(true)
	log := d.log.String()
	for _, want := range []string{
		fmt.Sprintf(`level=INFO msg="run created" run=%s uid=0 mechanism=cgroup`, r.ID),
		fmt.Sprintf(`level=INFO msg="worker started" run=%s worker=%d pid=%d uid=0`, r.ID, w.ID, w.PID),
		fmt.Sprintf(`level=INFO msg="worker exited" run=%s worker=%d pid=%d uid=0 code=7`, r.ID, w.ID, w.PID),
		fmt.Sprintf(`level=INFO msg="run torn down" run=%s uid=0 terminated=0 killed=false`, r.ID),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
