package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/reaper"
)

// groupTeardown: a run holding N processes (one worker that forked N-1
// children: flat, or each child setsid'd), from the first signal until
// every process is gone (and the cgroup removed, for the cgroup methods).
// This process is a subreaper with a wait4(-1) loop so that orphans of
// every method are reaped alike (POSIX mode needs the subreaper anyway).
func groupTeardown(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	rp, err := startReaper()
	if err != nil {
		return out, err
	}
	defer rp.Stop()
	type size struct{ n, reps int }
	sizes := []size{{10, c.pick(21, 11)}, {100, c.pick(11, 5)}, {1000, c.pick(7, 0)}}
	for _, sz := range sizes {
		for _, setsid := range []bool{false, true} {
			cas := fmt.Sprintf("N=%d %s", sz.n, shape(setsid))
			if sz.reps == 0 {
				out.Notes = append(out.Notes, "teardown "+cas+": skipped in quick mode")
				continue
			}
			progress("teardown %s: 4 methods x %d repetitions", cas, sz.reps)
			ss, err := runCase(ctx, sz.reps, 1, teardownMethods(ctx, c, rp, sz.n, setsid))
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			if err != nil {
				for _, m := range []string{tdBare, tdSnakepit, tdPOSIX, tdPgid} {
					out.Results = append(out.Results, Result{Group: "teardown", Case: cas, Method: m, Unit: "ms", Error: err.Error()})
				}
				continue
			}
			for i := range ss {
				if sm, ok := ss[i].extra["survivors_median"]; ok {
					ss[i].note = fmt.Sprintf("survivors: %.0f of %d", sm, sz.n)
					if mx := ss[i].extra["survivors_max"]; mx != sm {
						ss[i].note += fmt.Sprintf(" (max %.0f)", mx)
					}
				}
			}
			out.Results = append(out.Results, caseResults("teardown", cas, "ms", ss[0], ss[1:]...)...)
		}
	}
	return out, nil
}

func shape(setsid bool) string {
	if setsid {
		return "setsid"
	}
	return "flat"
}

func teardownMethods(ctx context.Context, c *config, rp *reaper.Reaper, n int, setsid bool) []method {
	newRun := func() (*snakepit.Run, error) {
		return snakepit.Create(ctx, snakepit.Options{CgroupParent: c.runsDir(), Reaper: rp})
	}
	// cleanup tears a run down (untimed) whatever state it is in.
	cleanup := func(r *snakepit.Run) {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_, _ = r.Teardown(tctx, 0)
	}
	return []method{
		{tdBare, func(int) (float64, map[string]float64, error) {
			r, err := newRun()
			if err != nil {
				return 0, nil, err
			}
			defer cleanup(r)
			if _, err := startTree(ctx, c, r, n, setsid, r.CgroupPath(), nil); err != nil {
				return 0, nil, err
			}
			t0 := time.Now()
			err = bareKill(ctx, r.CgroupPath())
			d := time.Since(t0)
			return msOf(d), nil, err
		}},
		{tdSnakepit, func(int) (float64, map[string]float64, error) {
			r, err := newRun()
			if err != nil {
				return 0, nil, err
			}
			defer cleanup(r)
			if _, err := startTree(ctx, c, r, n, setsid, r.CgroupPath(), nil); err != nil {
				return 0, nil, err
			}
			t0 := time.Now()
			_, err = r.Teardown(ctx, 0)
			d := time.Since(t0)
			if err != nil {
				return 0, nil, err
			}
			if _, err := os.Stat(r.CgroupPath()); err == nil {
				return 0, nil, errors.New("run cgroup left after Teardown")
			}
			return msOf(d), nil, nil
		}},
		{tdPOSIX, func(rep int) (float64, map[string]float64, error) {
			// The tree also goes into a bookkeeping cgroup (set through
			// Command.Modify; the POSIX teardown never looks at it), only
			// to count survivors and to clean them up afterwards.
			bk := filepath.Join(c.scratchDir(), fmt.Sprintf("posix-%d-%d", os.Getpid(), rep+1000))
			if err := os.Mkdir(bk, 0o755); err != nil {
				return 0, nil, err
			}
			defer killTree(bk) //nolint:errcheck
			dir, err := os.Open(bk)
			if err != nil {
				return 0, nil, err
			}
			defer dir.Close()
			r, err := snakepit.Create(ctx, snakepit.Options{Mode: snakepit.ModePOSIX, Reaper: rp})
			if err != nil {
				return 0, nil, err
			}
			defer cleanup(r)
			into := func(cmd *exec.Cmd) {
				cmd.SysProcAttr.UseCgroupFD = true
				cmd.SysProcAttr.CgroupFD = int(dir.Fd())
			}
			if _, err := startTree(ctx, c, r, n, setsid, bk, into); err != nil {
				return 0, nil, err
			}
			t0 := time.Now()
			_, err = r.Teardown(ctx, 0)
			d := time.Since(t0)
			if err != nil {
				return 0, nil, err
			}
			left := survivors(ctx, bk)
			return msOf(d), map[string]float64{"survivors": float64(left)}, nil
		}},
		{tdPgid, func(int) (float64, map[string]float64, error) {
			r, err := newRun()
			if err != nil {
				return 0, nil, err
			}
			defer cleanup(r) // the survivors are removed by cgroup
			w, err := startTree(ctx, c, r, n, setsid, r.CgroupPath(), nil)
			if err != nil {
				return 0, nil, err
			}
			pgid := w.PID() // spawn makes every worker a group leader
			t0 := time.Now()
			if err := unix.Kill(-pgid, unix.SIGKILL); err != nil {
				return 0, nil, err
			}
			for unix.Kill(-pgid, 0) == nil {
				if err := ctx.Err(); err != nil {
					return 0, nil, err
				}
				time.Sleep(time.Millisecond)
			}
			d := time.Since(t0)
			return msOf(d), map[string]float64{"survivors": float64(procCount(r.CgroupPath()))}, nil
		}},
	}
}

// survivors counts what is still alive in a bookkeeping cgroup after a
// teardown said it was done, giving the kernel up to a second to finish
// exits already under way.
func survivors(ctx context.Context, path string) int {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_ = bareWaitEmpty(wctx, path)
	return procCount(path)
}
