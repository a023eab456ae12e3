package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// groupGuardian: `snakepit run` (the supervisor) holding N processes is
// SIGKILLed; measured is the time from the kill until the run cgroup is
// empty and removed by the guardian (the wrapper's direct child dies by
// Pdeathsig, the rest only by the guardian). Baseline: a bare cgroup.kill
// + wait + rmdir of a run of the same N, done by a live supervisor. The
// last case's supervisor is a Go program with a large heap (cmdOwner),
// whose memory the kernel frees before it closes the supervisor's files.
func groupGuardian(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	rp, err := startReaper()
	if err != nil {
		return out, err
	}
	defer rp.Stop()
	// The owner: `snakepit run`, or (last case) a Go program with a large
	// heap that Creates its run through the library (spbench owner).
	type size struct {
		n, reps int
		heapMB  int
		exec    bool // guarded by the exec'd guardian, not the service
	}
	// Quick mode keeps enough repetitions for the targeted rows (N=10 and
	// 100): a median of 3 moved by 0.3x from one run to the next.
	for _, sz := range []size{{10, c.pick(11, 11), 0, false}, {100, c.pick(11, 5), 0, false}, {1000, c.pick(5, 0), 0, false},
		{10, c.pick(11, 3), ownerHeapMB, false}, {10, c.pick(11, 3), ownerHeapMB, true}} {
		cas := fmt.Sprintf("N=%d flat", sz.n)
		row := guardianRow
		switch {
		case sz.exec:
			cas = fmt.Sprintf("N=%d flat, %d MiB supervisor, exec'd guardian", sz.n, sz.heapMB)
			row = guardianExecRow
		case sz.heapMB > 0:
			cas = fmt.Sprintf("N=%d flat, %d MiB supervisor", sz.n, sz.heapMB)
			row = guardianHeapRow
		}
		if sz.reps == 0 {
			out.Notes = append(out.Notes, "guardian "+cas+": skipped in quick mode")
			continue
		}
		methods := []method{
			{"bare cgroup.kill + wait + rmdir (live supervisor)", func(int) (float64, map[string]float64, error) {
				r, err := snakepit.Create(ctx, snakepit.Options{CgroupParent: c.runsDir(), Reaper: rp})
				if err != nil {
					return 0, nil, err
				}
				defer func() {
					tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
					defer cancel()
					_, _ = r.Teardown(tctx, 0)
				}()
				if _, err := startTree(ctx, c, r, sz.n, false, r.CgroupPath(), nil); err != nil {
					return 0, nil, err
				}
				t0 := time.Now()
				err = bareKill(ctx, r.CgroupPath())
				return msOf(time.Since(t0)), nil, err
			}},
			{row, func(int) (float64, map[string]float64, error) {
				return guardianOnce(ctx, c, rp, sz.n, sz.heapMB, sz.exec)
			}},
		}
		if sz.heapMB == 0 {
			// What no guardian can beat: the owner dies while its run
			// is killed at once, so both deaths share the CPUs.
			methods = append(methods, method{guardianFloorRow, func(int) (float64, map[string]float64, error) {
				return floorOnce(ctx, c, rp, sz.n)
			}})
		}
		progress("guardian %s: %d methods x %d repetitions", cas, len(methods), sz.reps)
		ss, err := runCase(ctx, sz.reps, 1, methods)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if err != nil {
			for _, m := range methods {
				out.Results = append(out.Results, Result{Group: "guardian", Case: cas, Method: m.name, Unit: "ms", Error: err.Error()})
			}
			continue
		}
		if v, ok := ss[1].extra["empty_ms_median"]; ok {
			ss[1].note = fmt.Sprintf("empty after %.1f ms median", v)
		}
		out.Results = append(out.Results, caseResults("guardian", cas, "ms", ss[0], ss[1:]...)...)
	}
	return out, nil
}

func guardianOnce(ctx context.Context, c *config, rp *reaper.Reaper, n, heapMB int, execd bool) (float64, map[string]float64, error) {
	id := runid.Generate()
	path := filepath.Join(c.runsDir(), cgroup.Prefix+id)
	var cmd *exec.Cmd
	if heapMB > 0 {
		self, err := os.Executable()
		if err != nil {
			return 0, nil, err
		}
		argv := append([]string{"owner", "--heap-mb", strconv.Itoa(heapMB), "--parent", c.runsDir(), "--id", id, "--"}, treeArgs(c.perl, n, false)...)
		cmd = exec.Command(self, argv...)
		cmd.Env = append(os.Environ(), "SNAKEPIT_BIN="+c.snakepit)
		if execd {
			// No service can be reached or started under a regular
			// file: Create falls back to the exec'd guardian.
			cmd.Env = append(cmd.Env, guardian.DirEnv+"="+filepath.Join(c.snakepit, "no-service"))
		}
	} else {
		argv := append([]string{"run", "--run-id", id, "--cgroup-parent", c.runsDir(), "--grace", "0s", "--"}, treeArgs(c.perl, n, false)...)
		cmd = exec.Command(c.snakepit, argv...)
	}
	stop, err := startOwner(ctx, rp, cmd, path, n)
	if err != nil {
		return 0, nil, err
	}
	defer stop()
	// The guardian is started (and recorded) before the first worker; give
	// it a moment to be asleep in poll(2) on the owner's pidfd.
	rec, err := record.ReadCgroup(path)
	if err != nil {
		return 0, nil, err
	}
	if rec.Guardian == nil || rec.Guardian.PID <= 0 {
		return 0, nil, errors.New("run has no guardian recorded")
	}
	if err := settled(ctx, rec.Guardian.PID); err != nil {
		return 0, nil, err
	}

	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// Watched from before the kill: the guardian's rmdir is seen when it
	// happens, not at the next tick of a sleeping poll (a 100 us sleep
	// lasts up to 1 ms here), which only this row would pay.
	removed, err := watchRemoval(path)
	if err != nil {
		return 0, nil, err
	}
	defer removed.Close()
	t0 := time.Now()
	if err := unix.Kill(cmd.Process.Pid, unix.SIGKILL); err != nil {
		return 0, nil, err
	}
	if err := bareWaitEmpty(wctx, path); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return 0, nil, fmt.Errorf("waiting for the run to empty: %w", err)
	}
	empty := time.Since(t0)
	if err := removed.Wait(wctx); err != nil {
		return 0, nil, fmt.Errorf("guardian did not remove %s: %w", path, err)
	}
	gone := time.Since(t0)
	return msOf(gone), map[string]float64{"empty_ms": msOf(empty)}, nil
}

// floorOnce is a guardian that reacts in no time: `snakepit run
// --no-guardian` holding n processes is SIGKILLed and, at once, its run
// killed, emptied and removed by us, as bareKill does for a live owner.
func floorOnce(ctx context.Context, c *config, rp *reaper.Reaper, n int) (float64, map[string]float64, error) {
	id := runid.Generate()
	path := filepath.Join(c.runsDir(), cgroup.Prefix+id)
	argv := append([]string{"run", "--no-guardian", "--run-id", id, "--cgroup-parent", c.runsDir(), "--grace", "0s", "--"}, treeArgs(c.perl, n, false)...)
	cmd := exec.Command(c.snakepit, argv...)
	stop, err := startOwner(ctx, rp, cmd, path, n)
	if err != nil {
		return 0, nil, err
	}
	defer stop()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := unix.Kill(cmd.Process.Pid, unix.SIGKILL); err != nil {
		return 0, nil, err
	}
	err = bareKill(wctx, path)
	return msOf(time.Since(t0)), nil, err
}

// startOwner starts cmd, the owner of run cgroup path, and waits until
// the run holds n processes. stop kills what is left of the owner and the
// run, and reaps the owner.
func startOwner(ctx context.Context, rp *reaper.Reaper, cmd *exec.Cmd, path string, n int) (stop func(), err error) {
	cmd.Stderr = os.Stderr
	exitc, err := startChild(rp, cmd)
	if err != nil {
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Kill() // ESRCH once the measurement killed it
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = finishChild(wctx, cmd, exitc)
		_ = killTree(path)
	}
	if err := waitCount(ctx, path, n, nil); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// ownerHeapMB is the heap of the large supervisor (cmdOwner).
const ownerHeapMB = 256

// ownerHeap keeps the large supervisor's heap in use.
var ownerHeap []byte

// cmdOwner is the large supervisor of the guardian group: it touches
// --heap-mb MiB of heap, Creates run --id under --parent through the
// library (guarded by the service, as any library caller), starts the
// command after "--" in it and waits to be killed.
func cmdOwner(args []string) int {
	fs := flag.NewFlagSet("owner", flag.ContinueOnError)
	heapMB := fs.Int("heap-mb", ownerHeapMB, "MiB of heap to touch")
	parent := fs.String("parent", "", "run parent")
	id := fs.String("id", "", "run ID")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		return 2
	}
	ownerHeap = make([]byte, *heapMB<<20)
	for i := 0; i < len(ownerHeap); i += os.Getpagesize() {
		ownerHeap[i] = 1
	}
	ctx := context.Background()
	r, err := snakepit.Create(ctx, snakepit.Options{ID: *id, CgroupParent: *parent})
	if err == nil {
		_, err = r.Start(ctx, snakepit.Command{Args: fs.Args()})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spbench owner:", err)
		return 1
	}
	select {}
}
