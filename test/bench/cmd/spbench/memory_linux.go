package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
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
	var idle, wrapper, guardian, bwrap, dIdle, dRuns []float64
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
		w, g, err := rssOfWrapper(ctx, c)
		if err != nil {
			return out, fmt.Errorf("snakepit run: %w", err)
		}
		wrapper, guardian = append(wrapper, w), append(guardian, g)

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
		series{method: "guardian (snakepit __guardian)", samples: guardian})...)
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
// wrapper and of its guardian once both are idle.
func rssOfWrapper(ctx context.Context, c *config) (wrapper, guardian float64, err error) {
	id := runid.Generate()
	path := filepath.Join(c.runsDir(), cgroup.Prefix+id)
	cmd := exec.Command(c.snakepit, "run", "--run-id", id, "--cgroup-parent", c.runsDir(), "--", "/bin/sleep", "100000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
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
		return 0, 0, err
	}
	rec, err := snakepit.ReadCgroupRecord(path)
	if err != nil {
		return 0, 0, err
	}
	if rec.Guardian == nil || rec.Guardian.PID <= 0 {
		return 0, 0, errors.New("no guardian recorded")
	}
	if err := waitSleeping(ctx, rec.Guardian.PID); err != nil {
		return 0, 0, err
	}
	time.Sleep(settle)
	if wrapper, err = vmRSS(cmd.Process.Pid); err != nil {
		return 0, 0, err
	}
	if guardian, err = vmRSS(rec.Guardian.PID); err != nil {
		return 0, 0, err
	}
	return wrapper, guardian, nil
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
