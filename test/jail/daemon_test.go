//go:build linux

package jail_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/client"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// A daemon of our own, on a private socket and cgroup parent, for the
// daemon door of the spec: every setting the CLI's flags take, through
// POST /v1/runs and /v1/runs/{id}/workers.
type testDaemon struct {
	socket, parent string
	pid            int
	c              *client.Client
}

func startTestDaemon(t *testing.T) *testDaemon {
	t.Helper()
	m := testenv.RequireCgroup2(t)
	testenv.RequireRoot(t)
	dir := t.TempDir()
	d := &testDaemon{socket: filepath.Join(dir, "sock"), parent: filepath.Join(m.Path, "sptest-jaild-"+runid.Generate())}
	var log bytes.Buffer
	cmd := exec.Command(snakepitdBin, "daemon", "--socket", d.socket, "--cgroup-parent", d.parent, "--grace", "1s", "--no-scope")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("daemon exit: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("daemon did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
		// Whatever a failed test left: tear it down, then the parent.
		if ents, err := os.ReadDir(d.parent); err == nil {
			for _, e := range ents {
				if g, err := cgroup.Open(filepath.Join(d.parent, e.Name())); err == nil && e.IsDir() {
					_, _ = g.Kill(context.Background())
					_ = g.Remove(context.Background())
				}
			}
		}
		_ = os.Remove(d.parent)
	})
	d.c = client.New(d.socket)
	t.Cleanup(d.c.Close)
	testenv.Eventually(t, 30*time.Second, "daemon answers GET /v1/status", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("daemon exited: %v\n%s", err, log.String())
		default:
		}
		_, err := d.c.Status(context.Background())
		return err == nil
	})
	return d
}

// post sends body to path and returns the status and the decoded error
// (when the status is not 201) or decodes the created object into out.
func (d *testDaemon) post(t *testing.T, path, body string, out any) (int, api.Error) {
	t.Helper()
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://snakepit"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	dec := json.NewDecoder(resp.Body)
	if resp.StatusCode == http.StatusCreated && out != nil {
		if err := dec.Decode(out); err != nil {
			t.Fatal(err)
		}
	} else if resp.StatusCode != http.StatusCreated {
		_ = dec.Decode(&e)
	}
	return resp.StatusCode, e
}

func (d *testDaemon) runCgroups(t *testing.T) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(d.parent)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), cgroup.Prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// workerOutput starts argv in a fresh run with runBody's settings, waits
// for it to exit and returns its stdout.
func (d *testDaemon) workerOutput(t *testing.T, runBody string, worker spec.Worker) string {
	t.Helper()
	var run api.Run
	if st, e := d.post(t, api.PathRuns, runBody, &run); st != http.StatusCreated {
		t.Fatalf("create %s: %d %+v", runBody, st, e)
	}
	ctx := context.Background()
	defer func() {
		if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
			t.Errorf("delete: %v", err)
		}
	}()
	out := filepath.Join(t.TempDir(), "out")
	worker.Stdout = &out
	w, err := d.c.StartWorker(ctx, run.ID, worker)
	if err != nil {
		t.Fatalf("start %v: %v", worker.Argv, err)
	}
	testenv.Eventually(t, 30*time.Second, "worker exits", func() bool {
		r, err := d.c.GetRun(ctx, run.ID)
		return err == nil && len(r.Workers) == 1 && r.Workers[0].ID == w.ID && r.Workers[0].Exit != nil
	})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDaemonSpec: each setting of the spec works through the daemon door.
func TestDaemonSpec(t *testing.T) {
	d := startTestDaemon(t)
	ctx := context.Background()

	t.Run("memory_max", func(t *testing.T) {
		probe, err := limits.Probe(d.parent)
		if err != nil {
			t.Fatal(err)
		}
		var run api.Run
		st, e := d.post(t, api.PathRuns, `{"limits":{"memory_max":"64M"}}`, &run)
		if probe["memory"] == nil {
			if st != http.StatusCreated {
				t.Fatalf("memory controller available, yet %d %+v", st, e)
			}
			defer func() { _, _ = d.c.DeleteRun(ctx, run.ID, 0) }()
			b, err := os.ReadFile(filepath.Join(run.Cgroup, "memory.max"))
			if err != nil || strings.TrimSpace(string(b)) != "67108864" {
				t.Fatalf("memory.max = %q, %v", b, err)
			}
			return
		}
		if testenv.InVMRig() {
			t.Fatalf("VM rig: no memory controller: %v", probe["memory"])
		}
		if st != http.StatusUnprocessableEntity || e.Code != api.CodeControllerUnavailable || !strings.Contains(e.Error, "memory") {
			t.Fatalf("got %d %+v, want 422 %s naming memory", st, e, api.CodeControllerUnavailable)
		}
		if left := d.runCgroups(t); len(left) > 0 {
			t.Fatalf("a refused run left cgroups: %v", left)
		}
		// best_effort_limits: created, with the reason as a warning.
		st, e = d.post(t, api.PathRuns, `{"limits":{"memory_max":"64M"},"best_effort_limits":true}`, &run)
		if st != http.StatusCreated || len(run.Warnings) != 1 || !strings.Contains(run.Warnings[0], "memory") {
			t.Fatalf("best effort: %d %+v %+v", st, e, run)
		}
		if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("net none", func(t *testing.T) {
		out := d.workerOutput(t, `{"net":"none"}`, spec.Worker{Argv: []string{selfExe}, Env: []string{helperEnv + "=ifaces"}})
		var names []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "iface" {
				names = append(names, f[1])
			}
		}
		if len(names) != 1 || names[0] != "lo" {
			t.Fatalf("interfaces %v, want only lo; output:\n%s", names, out)
		}
	})

	t.Run("pid_ns", func(t *testing.T) {
		out := d.workerOutput(t, `{"pid_ns":true}`, spec.Worker{Argv: []string{"/bin/sh", "-c", `tr '\0' ' ' </proc/1/cmdline; echo; readlink /proc/self/ns/pid`}})
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], "__init") {
			t.Fatalf("PID 1 is not the run's init:\n%s", out)
		}
		ours, err := os.Readlink("/proc/self/ns/pid")
		if err != nil || lines[1] == ours || !strings.HasPrefix(lines[1], "pid:[") {
			t.Fatalf("worker's PID namespace %q, ours %q (%v): want a new one", lines[1], ours, err)
		}
	})

	t.Run("user nobody", func(t *testing.T) {
		out := d.workerOutput(t, `{}`, spec.Worker{Argv: []string{"/bin/sh", "-c", "id -u; grep NoNewPrivs /proc/self/status"}, User: "nobody"})
		if f := strings.Fields(out); len(f) != 3 || f[0] != "65534" || f[2] != "1" {
			t.Fatalf("want uid 65534 with no_new_privs, got %q", out)
		}
	})

	t.Run("ready line", func(t *testing.T) {
		var run api.Run
		if st, e := d.post(t, api.PathRuns, `{}`, &run); st != http.StatusCreated {
			t.Fatalf("create: %d %+v", st, e)
		}
		defer func() { _, _ = d.c.DeleteRun(ctx, run.ID, 0) }()
		marker := filepath.Join(t.TempDir(), "printed")
		var w api.Worker
		body := fmt.Sprintf(`{"argv":["/bin/sh","-c","sleep 0.2; touch %s; echo READY; exec sleep 60"],"ready":{"line":"^READY$"}}`, marker)
		if st, e := d.post(t, api.PathRuns+"/"+run.ID+"/workers", body, &w); st != http.StatusCreated {
			t.Fatalf("start: %d %+v", st, e)
		}
		// The 201 came after the line: the file touched just before it exists.
		if _, err := os.Stat(marker); err != nil || w.Ready == nil || w.Ready.Line != "READY" || w.State != api.WorkerRunning {
			t.Fatalf("201 before the ready line: %+v (marker: %v)", w, err)
		}
	})

	t.Run("ready timeout", func(t *testing.T) {
		var run api.Run
		if st, e := d.post(t, api.PathRuns, `{}`, &run); st != http.StatusCreated {
			t.Fatalf("create: %d %+v", st, e)
		}
		defer func() { _, _ = d.c.DeleteRun(ctx, run.ID, 0) }()
		t0 := time.Now()
		st, e := d.post(t, api.PathRuns+"/"+run.ID+"/workers", `{"argv":["/bin/sh","-c","setsid sleep 60 & exec sleep 60"],"ready":{"line":"^READY$"},"ready_timeout":"1s"}`, nil)
		took := time.Since(t0)
		if st != http.StatusUnprocessableEntity || e.Code != api.CodeNotReady || took < time.Second || took > 10*time.Second {
			t.Fatalf("got %d %+v after %v, want 422 %s after about 1s", st, e, took, api.CodeNotReady)
		}
		r, err := d.c.GetRun(ctx, run.ID)
		if err != nil || len(r.Workers) != 1 {
			t.Fatalf("the run stays: %+v, %v", r, err)
		}
		// Gone when answered (a zombie at most, until reaped).
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.Workers[0].PID)); err == nil && !strings.Contains(string(st), ") Z ") {
			t.Fatalf("worker still running after the answer: %s", st)
		}
		testenv.Eventually(t, 10*time.Second, "the worker's exit is listed", func() bool {
			r, err := d.c.GetRun(ctx, run.ID)
			return err == nil && len(r.Workers) == 1 && r.Workers[0].Exit != nil
		})
		t.Logf("not ready: answered after %v: %s", took.Round(time.Millisecond), e.Error)
	})
}

// TestBothDoorsSameErrors: the CLI and the daemon API reject the same bad
// spec with the same error (the CLI names the flag, the API the field).
func TestBothDoorsSameErrors(t *testing.T) {
	d := startTestDaemon(t)
	ctx := context.Background()
	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = d.c.DeleteRun(ctx, run.ID, 0) }()
	workers := api.PathRuns + "/" + run.ID + "/workers"
	for _, c := range []struct {
		name      string
		flags     []string
		path      string
		body      string
		exit      int
		code      string
		same      string // what both messages say
		sentinels []error
	}{
		{"unknown field", []string{"--memory-maxx", "1"}, api.PathRuns, `{"memory_maxx":1}`, 2, api.CodeInvalidJSON, "memory", nil},
		{"bad size", []string{"--memory-max", "12Q"}, api.PathRuns, `{"limits":{"memory_max":"12Q"}}`, 2, api.CodeInvalidLimit, `invalid limit: size "12Q": unknown unit "Q"`, []error{spec.ErrBadLimit}},
		{"negative pids", []string{"--pids-max", "-3"}, api.PathRuns, `{"limits":{"pids_max":-3}}`, 2, api.CodeInvalidLimit, `invalid limit: pids "-3": want a positive count or max`, []error{spec.ErrBadLimit}},
		{"bad regex", []string{"--ready-line", "("}, workers, `{"argv":["true"],"ready":{"line":"("}}`, 2, api.CodeInvalidReady, `invalid readiness: line "(": error parsing regexp: missing closing ): ` + "`(`", []error{spec.ErrBadReady}},
		{"unknown user", []string{"--user", "nosuchuser-sp"}, workers, `{"argv":["true"],"user":"nosuchuser-sp"}`, 2, api.CodeUnknownUser, `unknown user or group: user "nosuchuser-sp"`, nil},
		{"bad netns name", []string{"--net", "a/b"}, api.PathRuns, `{"net":"a/b"}`, 2, api.CodeInvalidNet, `invalid network namespace: name "a/b" (want a file name under /run/netns, without '/')`, []error{spec.ErrBadNetns}},
		{"empty run ID", []string{"--run-id", ""}, api.PathRuns, `{"id":""}`, 120, api.CodeInvalidRunID, "invalid run ID: empty", []error{runid.ErrInvalid}},
		{"bad grace", []string{"--grace", "5"}, api.PathRuns, `{"grace":"5"}`, 2, api.CodeInvalidDuration, `invalid duration: "5" needs a unit, e.g. 5s`, []error{spec.ErrBadDuration}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(snakepitBin, append(append([]string{"run"}, c.flags...), "--", "true")...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != c.exit {
				t.Errorf("CLI: %v, want exit %d; stderr %q", err, c.exit, stderr.String())
			}
			// One line; a usage error (exit 2) adds "Try 'snakepit run --help'".
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if c.exit == 2 && len(lines) == 2 && lines[1] == "Try 'snakepit run --help'" {
				lines = lines[:1]
			}
			if c.name != "unknown field" && len(lines) != 1 {
				t.Errorf("CLI: %d lines, want one: %q", len(lines), stderr.String())
			}
			if !strings.Contains(stderr.String(), c.same) {
				t.Errorf("CLI says %q, want %q", stderr.String(), c.same)
			}
			st, e := d.post(t, c.path, c.body, nil)
			if st/100 != 4 || e.Code != c.code || !strings.Contains(e.Error, c.same) {
				t.Errorf("API: %d %+v, want 4xx %s saying %q", st, e, c.code, c.same)
			}
			// The JSON form is decoded by the same parser as the flag.
			if c.path == api.PathRuns && c.sentinels != nil {
				if _, err := spec.DecodeRun([]byte(c.body)); !errors.Is(err, c.sentinels[0]) {
					t.Errorf("spec.DecodeRun: %v, want %v", err, c.sentinels[0])
				}
			}
		})
	}
	if left := d.runCgroups(t); len(left) != 1 {
		t.Errorf("run cgroups %v: a rejected spec made one", left)
	}
}
