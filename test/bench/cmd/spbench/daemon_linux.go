package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
)

// daemonProc is a `snakepit daemon` (or the floor's bare server) started
// for the harness: its own socket, runs under <root>/daemon<suffix>, log
// in the scratch directory.
type daemonProc struct {
	cmd    *exec.Cmd
	socket string
	parent string
	log    *os.File
	client *client.Client
}

func startDaemon(ctx context.Context, c *config, name string, args ...string) (*daemonProc, error) {
	return startServer(ctx, c, name, func(socket, parent string) []string {
		return append([]string{c.snakepit, "daemon", "--socket", socket, "--cgroup-parent", parent, "--grace", "2s"}, args...)
	})
}

// startServer starts the API server that argv(socket, parent) runs (a
// daemon, or the floor's bare server) and waits until it answers GET
// /v1/status.
func startServer(ctx context.Context, c *config, name string, argv func(socket, parent string) []string) (*daemonProc, error) {
	d := &daemonProc{
		socket: filepath.Join(c.tmp, name+".sock"),
		parent: filepath.Join(c.daemonDir(), name),
	}
	lf, err := os.Create(filepath.Join(c.tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	d.log = lf
	a := argv(d.socket, d.parent)
	d.cmd = exec.Command(a[0], a[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = lf, lf
	if err := d.cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	d.client = client.New(d.socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.client.Status(sctx)
		cancel()
		if err == nil {
			return d, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil || d.exited() {
			d.stop()
			b, _ := os.ReadFile(lf.Name())
			return nil, fmt.Errorf("%s not ready: %v; log: %s", filepath.Base(a[0]), err, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *daemonProc) exited() bool {
	// WNOWAIT: only look; cmd.Wait reaps it.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, d.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo != 0
}

// stop ends the daemon with SIGTERM (it tears its runs down), SIGKILL after
// 30 s, and removes its run parent.
func (d *daemonProc) stop() {
	d.client.Close()
	_ = d.cmd.Process.Signal(unix.SIGTERM)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
	d.log.Close()
	_ = killTree(d.parent)
}

// groupDaemon: the daemon's create-run + spawn + kill-run round trip over
// its unix socket against the same three library calls in-process, one at
// a time; then the throughput of 8 concurrent clients against 8 goroutines
// calling the library.
func groupDaemon(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	d, err := startDaemon(ctx, c, "rt")
	if err != nil {
		return out, err
	}
	defer d.stop()
	// The floor: what the round trip costs with nothing of the daemon
	// but an HTTP server around the library, in a process of its own.
	floor, err := startLibserve(ctx, c, "floor")
	if err != nil {
		return out, err
	}
	defer floor.stop()
	worker := []string{"/bin/sleep", "100000"}

	// Both methods wait until the worker has finished starting (asleep in
	// nanosleep) before they tear it down. Without that, the library's
	// Teardown, which follows Start at once, kills the worker inside the
	// dynamic loader, while the daemon's comes a request later, after the
	// worker has run its start: with 2 CPUs the daemon rows paid for the
	// worker's own start (its CPU per cycle doubled) as if it were the
	// daemon's overhead. The first look comes after workerStart (sleep
	// takes about 2.5 ms to start here), the next every 100 us: polling
	// /proc from 8 callers at once would eat the CPU both sides share.
	const workerStart = 2 * time.Millisecond
	lib := func(ctx context.Context) error {
		r, err := snakepit.Create(ctx, snakepit.Options{CgroupParent: c.libDir()})
		if err != nil {
			return err
		}
		w, serr := r.Start(ctx, snakepit.Command{Args: worker, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
		if serr == nil {
			serr = asleep(ctx, w.PID(), workerStart, 100*time.Microsecond)
		}
		_, terr := r.Teardown(context.WithoutCancel(ctx), 0)
		return errors.Join(serr, terr)
	}
	api1 := func(ctx context.Context, cl *client.Client) error {
		run, err := cl.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			return err
		}
		w, serr := cl.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: worker})
		if serr == nil {
			serr = asleep(ctx, w.PID, workerStart, 100*time.Microsecond)
		}
		td, terr := cl.DeleteRun(context.WithoutCancel(ctx), run.ID, 0)
		if terr == nil && td.Error != "" {
			terr = errors.New(td.Error)
		}
		return errors.Join(serr, terr)
	}

	reps := c.pick(101, 21)
	progress("daemon round trip: 3 methods x %d repetitions", reps)
	timed := func(f func() error) (float64, map[string]float64, error) {
		t0 := time.Now()
		err := f()
		return msOf(time.Since(t0)), nil, err
	}
	rt := []method{
		{daemonRTLib, func(int) (float64, map[string]float64, error) {
			return timed(func() error { return lib(ctx) })
		}},
		{daemonRTAPI, func(int) (float64, map[string]float64, error) {
			return timed(func() error { return api1(ctx, d.client) })
		}},
		{daemonRTFloor, func(int) (float64, map[string]float64, error) {
			return timed(func() error { return api1(ctx, floor.client) })
		}},
	}
	const rtCase = daemonRTCase
	ss, err := runCase(ctx, reps, 3, rt)
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	if err != nil {
		for _, m := range rt {
			out.Results = append(out.Results, Result{Group: "daemon", Case: rtCase, Method: m.name, Unit: "ms", Error: err.Error()})
		}
	} else {
		rows := caseResults("daemon", rtCase, "ms", ss[0], ss[1:]...)
		for i := 1; i < len(rows); i++ {
			rows[i].Extra = map[string]float64{"overhead_ms": rows[i].Median - rows[0].Median}
			rows[i].Note = fmt.Sprintf("%+.2f ms over the library", rows[i].Median-rows[0].Median)
		}
		out.Results = append(out.Results, rows...)
	}
	floor.stop() // its CPU must not count against the throughput rows

	// Throughput: 8 concurrent callers for a fixed window, alternating.
	const clients = 8 // daemonTPCase, daemonTPAPI
	window := time.Duration(c.pick(3, 1)) * time.Second
	windows := c.pick(5, 2)
	progress("daemon throughput: %d clients, 2 methods x %d windows of %v", clients, windows, window)
	cls := make([]*client.Client, clients)
	for i := range cls {
		cls[i] = client.New(d.socket)
		defer cls[i].Close()
	}
	through := func(call func(ctx context.Context, i int) error) (float64, map[string]float64, error) {
		wctx, cancel := context.WithTimeout(ctx, window)
		defer cancel()
		var n atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, clients)
		t0 := time.Now()
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for wctx.Err() == nil {
					// A call cut by the window's end does not count.
					if err := call(context.WithoutCancel(wctx), i); err != nil {
						errc <- err
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		select {
		case err := <-errc:
			return 0, nil, err
		default:
		}
		return float64(n.Load()) / el.Seconds(), nil, nil
	}
	tp := []method{
		{fmt.Sprintf("library, %d goroutines", clients), func(int) (float64, map[string]float64, error) {
			return through(func(ctx context.Context, _ int) error { return lib(ctx) })
		}},
		{daemonTPAPI, func(int) (float64, map[string]float64, error) {
			return through(func(ctx context.Context, i int) error { return api1(ctx, cls[i]) })
		}},
	}
	tpCase := daemonTPCase
	ss, err = runCase(ctx, windows, 0, tp)
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	if err != nil {
		for _, m := range tp {
			out.Results = append(out.Results, Result{Group: "daemon", Case: tpCase, Method: m.name, Unit: "ops/s", HigherIsBetter: true, Error: err.Error()})
		}
		return out, nil
	}
	rows := caseResults("daemon", tpCase, "ops/s", ss[0], ss[1])
	for i := range rows {
		rows[i].HigherIsBetter = true
	}
	out.Results = append(out.Results, rows...)
	d.stop()
	scale, err := daemonScale(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		scale = []Result{{Group: "daemon", Case: "scale", Method: "runs x 1 worker", Unit: "ms", Error: err.Error()}}
	}
	out.Results = append(out.Results, scale...)
	return out, nil
}
