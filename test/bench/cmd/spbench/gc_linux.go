package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// The pool of stale runs lives in <root>/gc/pool. The orchestrator starts
// this group in its own mount namespace in which the pool is also
// bind-mounted over the host's default run parent (and /dev/null over the
// daemon's parents file), so that `snakepit gc`, which always searches the
// default parent, sees only the harness's stale runs and never touches the
// runs of anyone else on the machine.
func (c *config) gcPool() string { return filepath.Join(c.gcDir(), "pool") }

// groupGC: `snakepit gc` (whole process) against a bare loop (one process
// too, so that both pay a process start), on M stale empty runs and on R
// stale runs holding 10 processes each. The stale runs are made through
// the library with an owner (a helper process) that is then killed.
func groupGC(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	pool := c.gcPool()
	viaDefault, err := checkGCIsolation(pool)
	if err != nil {
		return out, err
	}
	// File records of other groups must not be seen either.
	recs := filepath.Join(c.tmp, "gc-records")
	if err := os.MkdirAll(recs, 0o755); err != nil {
		return out, err
	}
	os.Setenv(record.DirEnv, recs)

	helper := exec.Command("/bin/sleep", "100000")
	if err := helper.Start(); err != nil {
		return out, err
	}
	owner, err := record.OwnerOf(helper.Process.Pid)
	_ = helper.Process.Kill()
	_ = helper.Wait()
	if err != nil {
		return out, err
	}
	if alive, why := owner.Check(); alive {
		return out, fmt.Errorf("helper owner still alive: %s", why)
	}

	type stale struct {
		cas        string
		runs, proc int
		reps       int
		base       string
		baseArgs   []string
	}
	self, err := os.Executable()
	if err != nil {
		return out, err
	}
	cases := []stale{
		{fmt.Sprintf("%d stale empty runs", c.pick(1000, 200)), c.pick(1000, 200), 0, c.pick(7, 3),
			"bare rmdir loop (one process)", []string{self, "rmdirloop", pool}},
		{fmt.Sprintf("%d stale runs x 10 processes", c.pick(100, 20)), c.pick(100, 20), 10, c.pick(5, 2),
			"bare loop: cgroup.kill all, then wait + rmdir each (one process)", []string{self, "killloop", pool}},
	}
	// The plain invocation: in this mount namespace the default parent is
	// the pool (checkGCIsolation); on a host without a default parent the
	// pool is named instead.
	gcArgs := []string{c.snakepit, "gc", "--grace", "0s", "--no-scan", "--json"}
	if !viaDefault {
		gcArgs = append(gcArgs, "--cgroup-parent", pool)
	}
	for _, sc := range cases {
		progress("gc %s: 2 methods x %d repetitions", sc.cas, sc.reps)
		mk := func() error { return makeStale(ctx, c, pool, owner, sc.runs, sc.proc) }
		methods := []method{
			{sc.base, func(int) (float64, map[string]float64, error) {
				if err := mk(); err != nil {
					return 0, nil, err
				}
				t0 := time.Now()
				b, err := exec.Command(sc.baseArgs[0], sc.baseArgs[1:]...).CombinedOutput()
				d := time.Since(t0)
				if err != nil {
					return 0, nil, fmt.Errorf("%w: %s", err, b)
				}
				return msOf(d), nil, poolEmpty(pool)
			}},
			{"snakepit gc (whole process)", func(int) (float64, map[string]float64, error) {
				if err := mk(); err != nil {
					return 0, nil, err
				}
				t0 := time.Now()
				b, err := exec.Command(gcArgs[0], gcArgs[1:]...).Output()
				d := time.Since(t0)
				if err != nil {
					return 0, nil, fmt.Errorf("snakepit gc: %w", err)
				}
				var rep inventory.GCReport
				if err := json.Unmarshal(b, &rep); err != nil {
					return 0, nil, fmt.Errorf("snakepit gc --json: %w", err)
				}
				removed := 0
				for _, it := range rep.Items {
					if it.Action == inventory.GCRemoved && it.Kind == "cgroup" {
						removed++
					}
				}
				if removed != sc.runs {
					return 0, nil, fmt.Errorf("snakepit gc removed %d of %d stale runs", removed, sc.runs)
				}
				return msOf(d), map[string]float64{"gc_internal_ms": rep.DurationMS}, poolEmpty(pool)
			}},
		}
		ss, err := runCase(ctx, sc.reps, 0, methods)
		_ = killTreeBelow(pool)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if err != nil {
			for _, m := range methods {
				out.Results = append(out.Results, Result{Group: "gc", Case: sc.cas, Method: m.name, Unit: "ms", Error: err.Error()})
			}
			continue
		}
		if v, ok := ss[1].extra["gc_internal_ms_median"]; ok {
			ss[1].note = fmt.Sprintf("GC() itself: %.1f ms median", v)
		}
		out.Results = append(out.Results, caseResults("gc", sc.cas, "ms", ss[0], ss[1:]...)...)
	}
	return out, nil
}

// checkGCIsolation makes sure every parent `snakepit gc` will search is the
// pool: otherwise gc would act on other people's runs. viaDefault says
// whether gc finds the pool as its default parent.
func checkGCIsolation(pool string) (viaDefault bool, err error) {
	if v := os.Getenv(inventory.ParentsEnv); v != "" {
		return false, fmt.Errorf("%s is set", inventory.ParentsEnv)
	}
	pst, err := os.Stat(pool)
	if err != nil {
		return false, err
	}
	for _, p := range inventory.KnownParents() {
		st, err := os.Stat(p)
		if err != nil || !os.SameFile(st, pst) {
			return false, fmt.Errorf("gc would also search %s (not isolated: the pool must be bind-mounted over it in a private mount namespace)", p)
		}
		viaDefault = true
	}
	return viaDefault, nil
}

// makeStale creates n runs in pool whose record names owner (dead), each
// holding procs processes. The workers' environment carries no run-ID
// marker: gc is measured with --no-scan, and an unmarked process cannot be
// taken for an orphan by a /proc scan of anyone else's gc on this machine
// (these runs are stale by design, their processes would be fair game).
func makeStale(ctx context.Context, c *config, pool string, owner snakepit.Owner, n, procs int) error {
	defer runtime.GC() // drop the open cgroup directories of the Run values
	type started struct {
		w    *snakepit.Worker
		path string
	}
	var ws []started
	unmark := func(cmd *exec.Cmd) {
		env := cmd.Env[:0:0]
		for _, kv := range cmd.Env {
			if !strings.HasPrefix(kv, runid.EnvVar+"=") {
				env = append(env, kv)
			}
		}
		cmd.Env = env
	}
	for i := 0; i < n; i++ {
		// No guardian: the owner is dead, and a guardian would tear the
		// run down before gc could be timed on it.
		r, err := snakepit.Create(ctx, snakepit.Options{CgroupParent: pool, Owner: owner, NoGuardian: true})
		if err != nil {
			return err
		}
		if procs > 0 {
			w, err := r.Start(ctx, snakepit.Command{Args: treeArgs(c.perl, procs, false), Modify: unmark})
			if err != nil {
				return err
			}
			ws = append(ws, started{w, r.CgroupPath()})
		}
	}
	for _, s := range ws {
		if err := waitCount(ctx, s.path, procs, s.w.Done()); err != nil {
			return err
		}
	}
	return nil
}

func poolEmpty(pool string) error {
	runs, err := inventory.ListRunCgroups(pool)
	if err != nil {
		return err
	}
	if len(runs) > 0 {
		return fmt.Errorf("%d run cgroups left in the pool", len(runs))
	}
	return nil
}

// killTreeBelow removes everything below path, keeping path.
func killTreeBelow(path string) error {
	ents, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, killTree(filepath.Join(path, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// runDirs lists the run cgroups (snakepit-*) directly in dir.
func runDirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), cgroup.Prefix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// cmdRmdirLoop is the baseline of gc on empty runs: list, rmdir each.
func cmdRmdirLoop(dir string) error {
	ds, err := runDirs(dir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, d := range ds {
		if err := bareRmdir(ctx, d); err != nil {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return nil
}

// cmdKillLoop is the baseline of gc on populated runs: cgroup.kill each,
// then wait until each is empty and rmdir it.
func cmdKillLoop(dir string) error {
	ds, err := runDirs(dir)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if err := writeFile(filepath.Join(d, "cgroup.kill"), "1"); err != nil {
			return fmt.Errorf("%s: cgroup.kill: %w", d, err)
		}
	}
	ctx := context.Background()
	for _, d := range ds {
		if err := bareWaitEmpty(ctx, d); err != nil {
			return err
		}
		if err := bareRmdir(ctx, d); err != nil {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return nil
}
