//go:build linux

package daemon

import (
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/limits"
)

// Bounds of a scrape: the per-run collector reads at most maxRuns runs'
// cgroup files within runStatsBudget (the rest are left out of that
// scrape), and at most maxScrapes scrapes run at once (others get 503).
const (
	runStatsBudget = 5 * time.Second
	maxScrapes     = 2
	scrapeTimeout  = 20 * time.Second
)

// metrics are the daemon's Prometheus metrics, in a registry of its own
// (never the global one: a program embedding the daemon keeps its own).
// Counters are updated where the daemon acts; gauges and per-run figures
// are read at scrape time, so an unscraped daemon pays only the counter
// increments.
type metrics struct {
	reg *prometheus.Registry

	runsCreated   *prometheus.CounterVec
	runsTornDown  *prometheus.CounterVec
	teardown      prometheus.Histogram
	teardownKills prometheus.Counter
	escaped       prometheus.Counter
	staleRemoved  prometheus.Counter
	workersStart  prometheus.Counter
	workersExit   prometheus.Counter
	limitEvents   *prometheus.CounterVec
	handler       http.Handler
}

// Mechanisms, the values of the mechanism label. The daemon's runs are
// always cgroup runs; posix is there so that dashboards shared with
// library users see one label set.
var mechanisms = []string{"cgroup", "posix"}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.runsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snakepit_runs_created_total", Help: "Runs created, by containment mechanism.",
	}, []string{"mechanism"})
	m.runsTornDown = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snakepit_runs_torn_down_total", Help: "Runs torn down (DELETE, shutdown), by containment mechanism.",
	}, []string{"mechanism"})
	for _, mech := range mechanisms {
		m.runsCreated.WithLabelValues(mech)
		m.runsTornDown.WithLabelValues(mech)
	}
	m.teardown = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "snakepit_teardown_duration_seconds",
		Help:    "Time a run's teardown took: SIGTERM, grace, cgroup.kill, wait until empty, rmdir.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 9), // 1 ms to 65 s
	})
	m.teardownKills = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "snakepit_teardown_kills_total", Help: "Teardowns whose grace ran out: what was left of the run was SIGKILLed.",
	})
	m.escaped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "snakepit_escaped_workers_total", Help: "Workers found outside their run cgroup at teardown, killed through their pidfds.",
	})
	m.staleRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "snakepit_stale_runs_removed_total", Help: "Runs of a previous instance removed at start.",
	})
	m.workersStart = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "snakepit_workers_started_total", Help: "Workers started.",
	})
	m.workersExit = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "snakepit_workers_exited_total", Help: "Workers that exited (any status).",
	})
	m.limitEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "snakepit_limit_events_total",
		Help: "Limit events of runs: oom_kill counts processes the OOM killer killed, oom_group_kill whole-run OOM kills, pids_max forks refused at pids.max.",
	}, []string{"kind"})
	for _, k := range []limits.EventKind{limits.EventOOMKill, limits.EventOOMGroupKill, limits.EventPidsMax} {
		m.limitEvents.WithLabelValues(string(k))
	}
	m.reg.MustRegister(m.runsCreated, m.runsTornDown, m.teardown, m.teardownKills, m.escaped,
		m.staleRemoved, m.workersStart, m.workersExit, m.limitEvents,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snakepit_runs", Help: "Runs the daemon holds now."},
			func() float64 {
				d.mu.Lock()
				defer d.mu.Unlock()
				return float64(len(d.runs))
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snakepit_workers", Help: "Workers running now."},
			func() float64 { return float64(d.workers.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "snakepit_event_streams", Help: "Open GET /v1/events streams."},
			func() float64 { return float64(d.events.count()) }),
		&runCollector{d: d},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// One handler: its in-flight bound is per handler.
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A run whose cgroup vanished mid-scrape must not void the rest.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             scrapeTimeout,
	})
	return m
}

// tornDown records a finished teardown.
func (m *metrics) tornDown(mech string, td api.Teardown) {
	m.runsTornDown.WithLabelValues(mech).Inc()
	m.teardown.Observe(td.DurationMS / 1000)
	if td.Killed {
		m.teardownKills.Inc()
	}
	if td.Escaped > 0 {
		m.escaped.Add(float64(td.Escaped))
	}
}

// runCollector reads every live run's usage at scrape time (limits.Stats,
// as GET /v1/runs/{id}/stats): gauges labelled by run, so a run's series
// ends with it. A figure the host lacks (its controller is not enabled for
// the run) is left out, never 0.
type runCollector struct{ d *Daemon }

var (
	descRunMem = prometheus.NewDesc("snakepit_run_memory_bytes",
		"memory.current of a live run.", []string{"run"}, nil)
	descRunCPU = prometheus.NewDesc("snakepit_run_cpu_seconds_total",
		"CPU time used by a live run (cpu.stat usage_usec).", []string{"run"}, nil)
	descRunPids = prometheus.NewDesc("snakepit_run_pids",
		"pids.current (processes and threads) of a live run.", []string{"run"}, nil)
	descRunWorkers = prometheus.NewDesc("snakepit_run_workers",
		"Workers running in a live run.", []string{"run"}, nil)
	descSkipped = prometheus.NewDesc("snakepit_scrape_runs_skipped",
		"Runs left out of this scrape's per-run figures (over the run bound or the time budget).", nil, nil)
)

func (c *runCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunMem, descRunCPU, descRunPids, descRunWorkers, descSkipped} {
		ch <- d
	}
}

func (c *runCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	list := make([]*runState, 0, len(d.runs))
	for _, rs := range d.runs {
		list = append(list, rs)
	}
	d.mu.Unlock()
	// Oldest first, so that the runs a bound leaves out are the same
	// from one scrape to the next.
	sort.Slice(list, func(i, j int) bool { return list[i].created.Before(list[j].created) })
	skipped := 0
	if len(list) > d.maxRuns {
		skipped = len(list) - d.maxRuns
		list = list[:d.maxRuns]
	}
	deadline := time.Now().Add(runStatsBudget)
	for i, rs := range list {
		if time.Now().After(deadline) {
			skipped += len(list) - i
			break
		}
		id := rs.run.ID()
		rs.mu.Lock()
		running := rs.running
		rs.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(descRunWorkers, prometheus.GaugeValue, float64(running), id)
		st, err := rs.run.Stats()
		if err != nil {
			continue // torn down meanwhile
		}
		if st.MemoryCurrent != nil {
			ch <- prometheus.MustNewConstMetric(descRunMem, prometheus.GaugeValue, float64(*st.MemoryCurrent), id)
		}
		if st.CPUUsageUsec != nil {
			ch <- prometheus.MustNewConstMetric(descRunCPU, prometheus.CounterValue, float64(*st.CPUUsageUsec)/1e6, id)
		}
		if st.PidsCurrent != nil {
			ch <- prometheus.MustNewConstMetric(descRunPids, prometheus.GaugeValue, float64(*st.PidsCurrent), id)
		}
	}
	ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.GaugeValue, float64(skipped))
}

// handleMetrics serves GET /metrics to root and members of --metrics-group.
func (d *Daemon) handleMetrics(w http.ResponseWriter, r *http.Request, p peer) {
	if p.err != nil || (p.uid != 0 && !p.inGroup(d.metricsGID)) {
		writeErr(w, errf(http.StatusForbidden, api.CodeForbidden, "uid %d may not read metrics", p.uid))
		return
	}
	d.metrics.handler.ServeHTTP(w, r)
}
