package daemon_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
)

func benchDaemon(b *testing.B) (*daemonProc, context.Context) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	// SNAKEPIT_BENCH_LOG=discard: the daemon's log goes to /dev/null.
	return startDaemon(b, daemonOpts{discardLog: os.Getenv("SNAKEPIT_BENCH_LOG") == "discard"}), ctx
}

// BenchmarkAPIRoundTrip: GET /v1/status over a kept-alive connection.
func BenchmarkAPIRoundTrip(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	for b.Loop() {
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetRun: GET /v1/runs/{id} of a run with 5 workers.
func BenchmarkGetRun(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	run, err := c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = c.DeleteRun(context.Background(), run.ID, 0) })
	for range 5 {
		if _, err := c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "600"}}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := c.GetRun(ctx, run.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// runCycle creates a run, starts one worker and tears the run down (grace 0).
func runCycle(b *testing.B, ctx context.Context, c *client.Client) {
	run, err := c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"/bin/true"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.DeleteRun(ctx, run.ID, 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRunCycle: create a run, start one worker, tear it down (grace 0).
func BenchmarkRunCycle(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	for b.Loop() {
		runCycle(b, ctx, c)
	}
}

// BenchmarkRunCycleScraped: BenchmarkRunCycle while GET /metrics is
// scraped every 100 ms (150 times Prometheus' default rate): what
// metrics cost the API when they are read.
func BenchmarkRunCycleScraped(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- n
				return
			case <-t.C:
				if code, _ := rawB(b, d.socket, api.PathMetrics); code == 200 {
					n++
				}
			}
		}
	}()
	for b.Loop() {
		runCycle(b, ctx, c)
	}
	close(stop)
	b.ReportMetric(float64(<-done), "scrapes")
}

// BenchmarkMetricsScrape: one GET /metrics with 100 live runs of one
// worker each (per-run series read from their cgroups at scrape time).
func BenchmarkMetricsScrape(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	var ids []string
	b.Cleanup(func() {
		for _, id := range ids {
			_, _ = c.DeleteRun(context.Background(), id, 0)
		}
	})
	for range 100 {
		run, err := c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, run.ID)
		if _, err := c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "600"}}); err != nil {
			b.Fatal(err)
		}
	}
	size := 0
	for b.Loop() {
		code, body := rawB(b, d.socket, api.PathMetrics)
		if code != 200 {
			b.Fatalf("GET /metrics: %d", code)
		}
		size = len(body)
	}
	b.ReportMetric(float64(size), "bytes")
}

// rawB is a GET over a fresh connection, as a scraper makes it.
func rawB(b *testing.B, socket, path string) (int, string) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := hc.Get("http://snakepit" + path)
	if err != nil {
		b.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
