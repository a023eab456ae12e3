package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	snakepit "github.com/snakepit/snakepit"
)

// groupSpawn: /bin/true started and reaped, five ways, interleaved:
// plain os/exec (the baseline), through the library into a run cgroup,
// `snakepit run -- /bin/true` as a whole process (run cgroup, guardian,
// teardown, rmdir), and bwrap with a PID namespace. No reaper and no
// subreaper here: the plain baseline must be plain.
func groupSpawn(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	reps := c.pick(201, 101) // quick mode too: the 1.05x spawn target is within the noise of 31
	r, err := snakepit.Create(ctx, snakepit.Options{CgroupParent: c.runsDir()})
	if err != nil {
		return out, fmt.Errorf("create run: %w", err)
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = r.Teardown(tctx, 0)
	}()

	type spawnMethod struct {
		name string
		run  func() error
		cmd  func() *exec.Cmd // a whole process: its CPU time is reported too
	}
	methods := []spawnMethod{
		{spawnPlain, func() error { return exec.Command("/bin/true").Run() }, nil},
		{spawnLib, func() error {
			w, err := r.Start(ctx, snakepit.Command{Args: []string{"/bin/true"}})
			if err != nil {
				return err
			}
			st, err := w.Wait(ctx)
			if err == nil && st.ShellCode() != 0 {
				err = fmt.Errorf("worker: %v", st)
			}
			return err
		}, nil},
		{spawnCLI, nil, func() *exec.Cmd {
			return exec.Command(c.snakepit, "run", "--cgroup-parent", c.runsDir(), "--", "/bin/true")
		}},
	}
	bwrapNote := ""
	if c.bwrap != "" {
		methods = append(methods, spawnMethod{spawnBwrap, nil, func() *exec.Cmd {
			return exec.Command(c.bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent", "/bin/true")
		}})
	} else {
		bwrapNote = "bwrap not installed"
	}

	progress("spawn: %d methods x %d repetitions", len(methods), reps)
	ms := make([]method, len(methods))
	for k, m := range methods {
		ms[k] = method{m.name, func(int) (float64, map[string]float64, error) {
			if m.cmd == nil {
				t0 := time.Now()
				err := m.run()
				return msOf(time.Since(t0)), nil, err
			}
			cmd := m.cmd()
			t0 := time.Now()
			err := cmd.Run()
			d := time.Since(t0)
			if err != nil {
				return 0, nil, err
			}
			// The process's CPU time (user + system, its children
			// included), as task-clock would count it.
			return msOf(d), map[string]float64{"cpu_ms": msOf(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())}, nil
		}}
	}
	ss, err := runCase(ctx, reps, 3, ms)
	if err != nil {
		return out, err
	}
	for i := range ss {
		if v, ok := ss[i].extra["cpu_ms_median"]; ok {
			ss[i].note = fmt.Sprintf("CPU %s median", fmtMs(v))
		}
	}
	rows := caseResults("spawn", spawnCase, "ms", ss[0], ss[1:]...)
	if bwrapNote != "" {
		rows = append(rows, Result{Group: "spawn", Case: spawnCase, Method: spawnBwrap,
			Unit: "ms", Error: bwrapNote})
	}
	out.Results = rows
	return out, nil
}

// groupSystemdSpawn: `systemd-run --scope /bin/true` vs plain os/exec, both
// where systemd is PID 1 (the host, or inside the systemd rig).
func groupSystemdSpawn(ctx context.Context, c *config) (GroupOutput, error) {
	var out GroupOutput
	reps := c.pick(101, 21)
	sr, err := exec.LookPath("systemd-run")
	if err != nil {
		return out, err
	}
	methods := []struct {
		name string
		argv []string
	}{
		{"plain os/exec (in the systemd rig)", []string{"/bin/true"}},
		{"systemd-run --scope (in the systemd rig)", []string{sr, "--scope", "--quiet", "--collect", "/bin/true"}},
	}
	ms := make([]method, len(methods))
	for k, m := range methods {
		ms[k] = method{m.name, func(int) (float64, map[string]float64, error) {
			t0 := time.Now()
			b, err := exec.Command(m.argv[0], m.argv[1:]...).CombinedOutput()
			d := time.Since(t0)
			if err != nil {
				err = fmt.Errorf("%w: %s", err, b)
			}
			return msOf(d), nil, err
		}}
	}
	ss, err := runCase(ctx, reps, 2, ms)
	if err != nil {
		return out, err
	}
	out.Results = caseResults("spawn", "/bin/true in the systemd rig", "ms", ss[0], ss[1])
	return out, nil
}
