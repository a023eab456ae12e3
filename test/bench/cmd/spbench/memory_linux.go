package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// settle is how long a process is left alone before its RSS is read.
const settle = 300 * time.Millisecond

// groupMemory: VmRSS of the `snakepit run` wrapper (vs bwrap's outer
// process), of its guardian (vs the smallest idle Go program), and of the
// daemon idle (vs that program) and holding 100 runs (vs itself idle).
func groupMemory(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	reps := c.pick(5, 2)
	runs := 100
	var idle, wrapper, guardian, createGuardian, bwrap, dIdle, dRuns []float64
	shared := 0
	progress("memory: %d repetitions", reps)
	for i := 0; i < reps; i++ {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if c.spidle != "" {
			v, err := rssOfCommand(ctx, exec.Command(c.spidle))
			if err != nil {
				return out, fmt.Errorf("idle Go program: %w", err)
			}
			idle = append(idle, v)
		}
		if c.bwrap != "" {
			v, err := rssOfCommand(ctx, exec.Command(c.bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent", "/bin/sleep", "100000"))
			if err != nil {
				return out, fmt.Errorf("bwrap: %w", err)
			}
			bwrap = append(bwrap, v)
		}
		w, g, sh, err := rssOfWrapper(ctx, c)
		if err != nil {
			return out, fmt.Errorf("snakepit run: %w", err)
		}
		wrapper, guardian = append(wrapper, w), append(guardian, g)
		if sh {
			shared++
		}
		if c.spidle != "" {
			cg, err := rssOfCreateGuardian(ctx, c)
			if err != nil {
				return out, fmt.Errorf("snakepit create: %w", err)
			}
			createGuardian = append(createGuardian, cg)
		}

		di, dr, err := rssOfDaemon(ctx, c, fmt.Sprintf("mem%d", i), runs)
		if err != nil {
			return out, fmt.Errorf("daemon: %w", err)
		}
		dIdle, dRuns = append(dIdle, di), append(dRuns, dr)
	}
	idleS := series{method: "idle Go program (runtime floor)", samples: idle}
	const unit = "MiB"
	if c.bwrap != "" {
		out.Results = append(out.Results, caseResults("memory", "wrapper, running sleep", unit,
			series{method: "bwrap --unshare-pid --die-with-parent (outer process)", samples: bwrap},
			series{method: "snakepit run (wrapper)", samples: wrapper})...)
	} else {
		out.Results = append(out.Results, caseResults("memory", "wrapper, running sleep", unit,
			series{method: "snakepit run (wrapper)", samples: wrapper})...)
		out.Notes = append(out.Notes, "memory: bwrap not installed, wrapper row has no baseline")
	}
	out.Results = append(out.Results, caseResults("memory", "guardian, watching its owner", unit, idleS,
		series{method: "run's guardian: the guardian service (one per user, shared by all runs)", samples: guardian},
		series{method: "create's guardian: the same service", samples: createGuardian})...)
	if shared > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("memory: in %d of %d repetitions the guardian of `snakepit run` shared the wrapper's memory (kcmp KCMP_VM): it has no pages of its own, so its row counts 0 MiB; its VmRSS would show the wrapper's", shared, reps))
	}
	out.Results = append(out.Results, caseResults("memory", "daemon, idle", unit, idleS,
		series{method: "snakepit daemon, no runs", samples: dIdle})...)
	out.Results = append(out.Results, caseResults("memory", fmt.Sprintf("daemon, %d runs", runs), unit,
		series{method: "snakepit daemon, no runs", samples: dIdle},
		series{method: fmt.Sprintf("snakepit daemon, %d runs x 1 worker", runs), samples: dRuns})...)
	return out, nil
}

// rssOfCommand starts cmd, waits until it has settled and returns its RSS;
// it kills it afterwards.
func rssOfCommand(ctx context.Context, cmd *exec.Cmd) (float64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return vmRSS(cmd.Process.Pid)
}

// rssOfWrapper runs `snakepit run -- sleep` and returns the RSS of the
// wrapper and of its guardian (the service) once both are idle. shared is
// true should the guardian share the wrapper's mm: then its own memory is 0
// rather than its VmRSS (which is the wrapper's).
func rssOfWrapper(ctx context.Context, c *config) (wrapper, guardian float64, shared bool, err error) {
	id := runid.Generate()
	path := filepath.Join(c.runsDir(), cgroup.Prefix+id)
	cmd := exec.Command(c.snakepit, "run", "--run-id", id, "--cgroup-parent", c.runsDir(), "--", "/bin/sleep", "100000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, false, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(unix.SIGTERM) // forwarded to sleep; the wrapper then tears down and exits
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = killTree(path)
	}()
	if err := waitCount(ctx, path, 1, nil); err != nil {
		return 0, 0, false, err
	}
	rec, err := record.ReadCgroup(path)
	if err != nil {
		return 0, 0, false, err
	}
	if rec.Guardian == nil || rec.Guardian.PID <= 0 {
		return 0, 0, false, errors.New("no guardian recorded")
	}
	if err := settled(ctx, rec.Guardian.PID); err != nil {
		return 0, 0, false, err
	}
	time.Sleep(settle)
	if wrapper, err = vmRSS(cmd.Process.Pid); err != nil {
		return 0, 0, false, err
	}
	if sameMM(cmd.Process.Pid, rec.Guardian.PID) {
		return wrapper, 0, true, nil
	}
	if guardian, err = vmRSS(rec.Guardian.PID); err != nil {
		return 0, 0, false, err
	}
	return wrapper, guardian, false, nil
}

// rssOfCreateGuardian makes a run with `snakepit create` owned by an idle
// Go program and returns the RSS of the guardian that watches it (the
// guardian service), once asleep.
func rssOfCreateGuardian(ctx context.Context, c *config) (float64, error) {
	owner := exec.Command(c.spidle)
	if err := owner.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = owner.Process.Kill()
		_ = owner.Wait()
	}()
	id := runid.Generate()
	path := filepath.Join(c.runsDir(), cgroup.Prefix+id)
	defer func() { _ = killTree(path) }()
	out, err := exec.CommandContext(ctx, c.snakepit, "create", "--run-id", id, "--cgroup-parent", c.runsDir(),
		"--owner-pid", strconv.Itoa(owner.Process.Pid)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	rec, err := record.ReadCgroup(path)
	if err != nil {
		return 0, err
	}
	if rec.Guardian == nil || rec.Guardian.PID <= 0 {
		return 0, errors.New("no guardian recorded")
	}
	g, err := reaper.Pin(*rec.Guardian)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	// The guardian is the service every run shares: it tears this run
	// down when the owner dies (the deferred kill) and exits once idle.
	if err := settled(ctx, g.PID); err != nil {
		return 0, err
	}
	time.Sleep(settle)
	return vmRSS(g.PID)
}

// sameMM reports whether two processes share one address space
// (kcmp(2) KCMP_VM), as a CLONE_VM child does with its parent.
func sameMM(a, b int) bool {
	const kcmpVM = 1
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return errno == 0 && r == 0
}

// rssOfDaemon starts a daemon and returns its RSS idle and then holding n
// runs of one sleeping worker each.
func rssOfDaemon(ctx context.Context, c *config, name string, n int) (idle, loaded float64, err error) {
	d, err := startDaemon(ctx, c, name)
	if err != nil {
		return 0, 0, err
	}
	defer d.stop()
	pid := d.cmd.Process.Pid
	time.Sleep(settle)
	if idle, err = vmRSS(pid); err != nil {
		return 0, 0, err
	}
	for i := 0; i < n; i++ {
		run, err := d.client.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			return 0, 0, err
		}
		if _, err := d.client.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"/bin/sleep", "100000"}}); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(settle)
	if loaded, err = vmRSS(pid); err != nil {
		return 0, 0, err
	}
	if _, err := os.Stat(d.parent); err != nil {
		return 0, 0, err
	}
	return idle, loaded, nil
}
