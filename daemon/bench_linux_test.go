package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
)

func benchDaemon(b *testing.B) (*daemonProc, context.Context) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	return startDaemon(b, daemonOpts{}), ctx
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

// BenchmarkRunCycle: create a run, start one worker, tear it down (grace 0).
func BenchmarkRunCycle(b *testing.B) {
	d, ctx := benchDaemon(b)
	c := client.New(d.socket)
	defer c.Close()
	for b.Loop() {
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
}
