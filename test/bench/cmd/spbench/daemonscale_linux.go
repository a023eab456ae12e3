package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/api"
)

// daemonScale: one daemon filled with runs of one sleeping worker each.
// GET /v1/status at 1 run against at n runs (it must be flat), the
// daemon's RSS with no runs against n runs, and SIGTERM with m runs: the
// time until it has exited, every run torn down, and its errors= count.
func daemonScale(ctx context.Context, c *config) ([]Result, error) {
	n, m := c.pick(1000, 200), c.pick(2000, 400)
	// All runs are root's: --max-workers counts per UID.
	d, err := startDaemon(ctx, c, "scale", "--max-workers", strconv.Itoa(m+10))
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			d.stop()
		}
	}()
	pid := d.cmd.Process.Pid
	time.Sleep(settle)
	idle, err := vmRSS(pid)
	if err != nil {
		return nil, err
	}
	var made atomic.Int64
	fill := func(to int) error {
		var wg sync.WaitGroup
		errc := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for made.Add(1) <= int64(to) {
					run, err := d.client.CreateRun(ctx, api.CreateRunRequest{})
					if err == nil {
						_, err = d.client.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"/bin/sleep", "100000"}})
					}
					if err != nil {
						errc <- err
						return
					}
				}
				made.Add(-1) // the failed claim
			}()
		}
		wg.Wait()
		close(errc)
		return <-errc
	}
	status := func() ([]float64, error) {
		var out []float64
		for range c.pick(51, 21) {
			t0 := time.Now()
			if _, err := d.client.Status(ctx); err != nil {
				return nil, err
			}
			out = append(out, msOf(time.Since(t0)))
		}
		return out, nil
	}
	if err := fill(1); err != nil {
		return nil, err
	}
	s1, err := status()
	if err != nil {
		return nil, err
	}
	progress("daemon scale: %d runs x 1 worker", n)
	if err := fill(n); err != nil {
		return nil, err
	}
	sN, err := status()
	if err != nil {
		return nil, err
	}
	time.Sleep(settle)
	rssN, err := vmRSS(pid)
	if err != nil {
		return nil, err
	}
	var out []Result
	out = append(out, caseResults("daemon", daemonStatus, "ms",
		series{method: "1 run", samples: s1},
		series{method: daemonScaleRow(n), samples: sN})...)
	out = append(out, caseResults("daemon", daemonRSSCase, "MiB",
		series{method: "no runs", samples: []float64{idle}},
		series{method: daemonScaleRow(n), samples: []float64{rssN}})...)

	progress("daemon scale: shutdown of %d runs", m)
	if err := fill(m); err != nil {
		return nil, err
	}
	t0 := time.Now()
	_ = d.cmd.Process.Signal(unix.SIGTERM)
	werr := d.cmd.Wait()
	took := msOf(time.Since(t0))
	stopped = true
	d.client.Close()
	d.log.Close()
	left := countRunCgroups(d.parent)
	_ = killTree(d.parent)
	log, _ := os.ReadFile(d.log.Name())
	errs := "?"
	if mm := regexp.MustCompile(`msg=stopped runs=\d+ errors=(\d+)`).FindSubmatch(log); mm != nil {
		errs = string(mm[1])
	}
	r := caseResults("daemon", "shutdown (SIGTERM until exit)", "ms",
		series{method: daemonScaleRow(m), samples: []float64{took}, note: fmt.Sprintf("errors=%s, run cgroups left: %d", errs, left)})
	if werr != nil || errs != "0" || left != 0 {
		r[0].Error = errors.Join(werr, fmt.Errorf("errors=%s, %d run cgroups left", errs, left)).Error()
	}
	return append(out, r...), nil
}

func countRunCgroups(parent string) int {
	ents, _ := os.ReadDir(parent)
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}
