//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// lcStart starts the snakepit binary with args in its own process group
// (so a test can kill that group without hitting itself), stdio on
// /dev/null. At cleanup it is killed if still running and reaped, and run
// id (if any) must be gone: a leftover fails the test after removal.
func lcStart(t *testing.T, id string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if id != "" {
			lcWaitGone(t, id, 10*time.Second)
		}
	})
	return cmd
}

// lcWaitGone waits until run id is removed (rmdir has no notification we
// can watch from here); if it is not, it removes it and fails the test.
func lcWaitGone(t *testing.T, id string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if !testenv.Within(d, func() bool {
		_, err := inventory.Lookup(id)
		return errors.Is(err, snakepit.ErrUnknownRun)
	}) && removeRun(id) {
		t.Errorf("run %s still there after %v (removed now)", id, d)
	}
	return time.Since(start)
}

// lcWaitRun waits until run id exists and holds at least n processes.
func lcWaitRun(t *testing.T, id string, n int) *cgroup.Group {
	t.Helper()
	return lcWaitRunIn(t, "", id, n)
}

// lcPin pins every process of g (pidfd + start time).
func lcPin(t *testing.T, g *cgroup.Group) []*reaper.Pinned {
	t.Helper()
	pids, err := g.ProcsRecursive()
	if err != nil {
		t.Fatal(err)
	}
	var out []*reaper.Pinned
	for _, pid := range pids {
		id, err := reaper.IdentityOf(pid)
		if err != nil {
			continue
		}
		if p, err := reaper.Pin(id); err == nil {
			out = append(out, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range out {
			p.Close()
		}
	})
	return out
}

// lcGuardian pins the guardian recorded on run g, which must exit once
// its duty is done: the test gives it a service of its own first
// (privateGuardian).
func lcGuardian(t *testing.T, g *cgroup.Group) *reaper.Pinned {
	t.Helper()
	if os.Getenv(guardian.DirEnv) == "" {
		t.Fatal("lcGuardian without privateGuardian: the shared service outlives the test's run")
	}
	rec, err := record.ReadCgroup(g.Path())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Guardian == nil {
		t.Fatalf("no guardian recorded: %+v", rec)
	}
	p, err := reaper.Pin(*rec.Guardian)
	if err != nil {
		t.Fatalf("guardian %+v: %v", *rec.Guardian, err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			t.Errorf("guardian %d outlived its duty", p.PID)
			_ = p.Signal(unix.SIGKILL)
		}
		p.Close()
	})
	return p
}

func lcWaitExited(t *testing.T, what string, ps []*reaper.Pinned, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if left := reaper.WaitExited(ctx, ps); len(left) > 0 {
		var pids []int
		for _, p := range left {
			pids = append(pids, p.PID)
		}
		t.Fatalf("%s: %d still alive after %v: %v", what, len(left), d, pids)
	}
	return time.Since(start)
}

const lcTree = `sleep 300 & setsid sh -c 'sleep 301 & exec sleep 302' & exec sleep 303`

// privateGuardian gives the snakepit processes the test starts a guardian
// service of their own: this test process's own runs (tests call run in
// process) keep the shared one connected, so it would never idle out.
func privateGuardian(t *testing.T) {
	t.Helper()
	t.Setenv(guardian.DirEnv, t.TempDir())
}

func TestGuardianCleansUpAfterSIGKILL(t *testing.T) {
	testenv.RequireCgroup2(t)
	privateGuardian(t)
	for _, target := range []string{"wrapper", "process-group"} {
		t.Run(target, func(t *testing.T) {
			id := runid.Generate()
			cmd := lcStart(t, id, "run", "--run-id", id, "--", "sh", "-c", lcTree)
			g := lcWaitRun(t, id, 4)
			procs := lcPin(t, g)
			guardian := lcGuardian(t, g)
			t0 := time.Now()
			pid := cmd.Process.Pid
			if target == "process-group" {
				pid = -pid // the wrapper leads its group (Setpgid)
			}
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			lcWaitExited(t, "run processes", procs, 10*time.Second)
			allGone := time.Since(t0)
			lcWaitGone(t, id, 10*time.Second)
			removed := time.Since(t0)
			lcWaitExited(t, "guardian", []*reaper.Pinned{guardian}, 10*time.Second)
			_ = cmd.Wait()
			t.Logf("SIGKILL %s -> %d processes gone in %v, run removed in %v, guardian exited in %v",
				target, len(procs), allGone, removed, time.Since(t0))
		})
	}
}

func TestGuardianExitsWithWrapper(t *testing.T) {
	testenv.RequireCgroup2(t)
	privateGuardian(t)
	id := runid.Generate()
	cmd := lcStart(t, id, "run", "--run-id", id, "--", "sh", "-c", "setsid sleep 300 & exec sleep 301")
	g := lcWaitRun(t, id, 2)
	guardian := lcGuardian(t, g)
	// End the run normally: SIGTERM is forwarded, the wrapper tears down
	// and exits; the guardian must follow at once.
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t0 := time.Now()
	lcWaitExited(t, "guardian", []*reaper.Pinned{guardian}, 10*time.Second)
	t.Logf("guardian exited %v after the wrapper", time.Since(t0))
	if _, err := inventory.Lookup(id); !errors.Is(err, snakepit.ErrUnknownRun) {
		t.Fatalf("run left behind: %v", err)
	}
}

// createOwned makes a run with `create --owner-pid` whose owner is a
// sleep of the test's, killed at its end (if the test has not).
func createOwned(t *testing.T) (owner *exec.Cmd, id string) {
	t.Helper()
	owner = exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
	id = runid.Generate()
	out, err := exec.Command(binPath, "create", "--run-id", id, "--owner-pid", strconv.Itoa(owner.Process.Pid)).Output()
	if err != nil || strings.TrimSpace(string(out)) != id {
		removeRun(id)
		t.Fatalf("create: %q, %v", out, err)
	}
	return owner, id
}

func TestCreateGuardianWatchesOwner(t *testing.T) {
	testenv.RequireCgroup2(t)
	privateGuardian(t)
	owner, id := createOwned(t)
	lcStart(t, id, "exec", id, "--", "sh", "-c", "setsid sleep 300 & exec sleep 301")
	g := lcWaitRun(t, id, 2)
	rec, err := record.ReadCgroup(g.Path())
	if err != nil || rec.Owner.PID != owner.Process.Pid {
		t.Fatalf("record %+v, %v: want owner %d", rec, err, owner.Process.Pid)
	}
	procs := lcPin(t, g)
	guardian := lcGuardian(t, g)
	t0 := time.Now()
	_ = owner.Process.Kill()
	_ = owner.Wait()
	lcWaitExited(t, "run processes", procs, 10*time.Second)
	lcWaitGone(t, id, 10*time.Second)
	lcWaitExited(t, "guardian", []*reaper.Pinned{guardian}, 10*time.Second)
	t.Logf("owner killed -> run %s gone in %v", id, time.Since(t0))
}

// A run of `create --owner-pid` that `snakepit kill` tears down is
// forgotten by the guardian service: with nothing else to watch it idles
// out although the owner lives on (it used to watch that owner, holding
// the dead run's descriptors, until the owner died).
func TestKillForgetsOwnerWatch(t *testing.T) {
	testenv.RequireCgroup2(t)
	privateGuardian(t)
	owner, id := createOwned(t)
	lcStart(t, id, "exec", id, "--", "sleep", "300")
	g := lcWaitRun(t, id, 1)
	procs := lcPin(t, g)
	guardian := lcGuardian(t, g)
	if o, e, status := lcRun(t, "kill", "--grace", "0", id); status != 0 {
		t.Fatalf("kill: status %d\n%s%s", status, o, e)
	}
	lcWaitExited(t, "run processes", procs, 10*time.Second)
	lcWaitGone(t, id, 10*time.Second)
	lcWaitExited(t, "guardian service (idle once the run is forgotten)", []*reaper.Pinned{guardian}, 10*time.Second)
	if err := unix.Kill(owner.Process.Pid, 0); err != nil {
		t.Fatalf("the owner died meanwhile (%v): the test proves nothing", err)
	}
}

func TestCreateRejectsBadOwner(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, arg := range []string{"0", "-3", "abc", "999999999"} {
		id := runid.Generate()
		err := exec.Command(binPath, "create", "--run-id", id, "--owner-pid", arg).Run()
		if exitStatus(t, err) == 0 {
			t.Errorf("create --owner-pid %s succeeded", arg)
		}
		if removeRun(id) {
			t.Errorf("create --owner-pid %s made run %s", arg, id)
		}
	}
}

func lcRun(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return o.String(), e.String(), exitStatus(t, err)
}

func TestKillCommandBadInput(t *testing.T) {
	testenv.RequireCgroup2(t)
	// A live run that must survive every bad kill below.
	id := runid.Generate()
	cmd := lcStart(t, id, "run", "--run-id", id, "--", "sleep", "300")
	g := lcWaitRun(t, id, 1)
	// Its exit status is asserted below as that of a SIGTERMed sleep.
	lcWaitCmdlines(t, g, "sleep 300")
	procs := lcPin(t, g)

	for _, c := range []struct {
		args   []string
		status int
		msg    string
	}{
		{[]string{"kill"}, exitUsage, "no run ID"},
		{[]string{"kill", "../../etc"}, exitInvalidID, "invalid run ID"},
		{[]string{"kill", "ABCDEFG"}, exitInvalidID, "invalid run ID"},
		{[]string{"kill", id, "bad id"}, exitInvalidID, "nothing killed"},
		{[]string{"kill", "--grace", "soon", id}, exitUsage, "--grace"},
		{[]string{"kill", runid.Generate()}, exitUnknownRun, "no such run"},
	} {
		_, stderr, status := lcRun(t, c.args...)
		if status != c.status || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: status %d, stderr %q; want %d and %q", c.args, status, stderr, c.status, c.msg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if left := reaper.WaitExited(ctx, procs); len(left) != len(procs) {
		t.Fatal("a bad kill hurt the live run")
	}

	// Unknown and known together: the known one is killed, status 118.
	unknown := runid.Generate()
	stdout, stderr, status := lcRun(t, "kill", "--grace", "1s", unknown, id)
	if status != exitUnknownRun || !strings.Contains(stderr, unknown) || !strings.Contains(stdout, id) {
		t.Fatalf("kill unknown+known: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	lcWaitExited(t, "killed run", procs, 10*time.Second)
	_ = cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.ExitStatus() != 128+int(unix.SIGTERM) {
		t.Errorf("wrapper of the killed run: %v, want exit 143 (its sleep got SIGTERM)", cmd.ProcessState)
	}
}

func TestPsJSONTree(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	cmd := lcStart(t, id, "run", "--run-id", id, "--", "sh", "-c", "setsid sleep 300 & exec sleep 301")
	lcWaitRun(t, id, 2)
	// The run holds both processes from their forks on, before setsid and
	// sh have exec'd sleep: re-list until ps shows what is asserted below
	// (or the bound passes, and the assertions report what it showed).
	var out string
	var got map[string]any
	testenv.Within(30*time.Second, func() bool {
		var stderr string
		var status int
		out, stderr, status = lcRun(t, "ps", "--json", "--tree")
		if status != 0 {
			t.Fatalf("ps: %d %s", status, stderr)
		}
		var runs []map[string]any
		if err := json.Unmarshal([]byte(out), &runs); err != nil {
			t.Fatalf("ps --json: %v\n%s", err, out)
		}
		got = nil
		for _, r := range runs {
			if r["id"] == id {
				got = r
			}
		}
		return got != nil && strings.Join(psCmdlines(got), "|") == "sleep 300|sleep 301"
	})
	if got == nil {
		t.Fatalf("run %s not in ps:\n%s", id, out)
	}
	for _, k := range []string{"id", "cgroup", "owner_pid", "owner_alive", "procs", "age_seconds", "mechanism", "processes"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing from %v", k, got)
		}
	}
	if got["mechanism"] != "cgroup" || got["owner_alive"] != true || got["owner_pid"] != float64(cmd.Process.Pid) || got["procs"] != float64(2) {
		t.Errorf("ps entry %v (wrapper pid %d)", got, cmd.Process.Pid)
	}
	for _, p := range got["processes"].([]any) {
		if pm := p.(map[string]any); pm["pid"].(float64) <= 0 {
			t.Errorf("bad pid in %v", pm)
		}
	}
	if cmdlines := psCmdlines(got); strings.Join(cmdlines, "|") != "sleep 300|sleep 301" {
		t.Errorf("processes %q", cmdlines)
	}
	text, _, _ := lcRun(t, "ps", "--tree")
	sc := bufio.NewScanner(strings.NewReader(text))
	found := false
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 4 && f[0] == id && f[1] == "cgroup" && f[3] == "yes" && f[4] == "2" {
			found = true
		}
	}
	if !found {
		t.Errorf("ps text has no line for %s:\n%s", id, text)
	}
}

// psCmdlines returns the sorted command lines of the processes of a run as
// `ps --json --tree` lists it.
func psCmdlines(run map[string]any) []string {
	ps, _ := run["processes"].([]any)
	var out []string
	for _, p := range ps {
		pm, _ := p.(map[string]any)
		c, _ := pm["cmdline"].(string)
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

func TestGCCommandSparesLiveRun(t *testing.T) {
	m := testenv.RequireCgroup2(t)
	// A private parent and an unmarked stale run: another developer's global
	// gc on this host can then not take the stale run before ours does.
	parent := filepath.Join(m.Path, "sptest-"+runid.Generate())
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The live wrapper was SIGKILLed by lcStart's cleanup just before:
		// its guardian removes its run.
		testenv.Within(10*time.Second, func() bool {
			runs, _ := inventory.ListRunCgroups(parent)
			return len(runs) == 0
		})
		if runs, _ := inventory.ListRunCgroups(parent); len(runs) > 0 {
			t.Errorf("runs left under %s: %v", parent, runs)
			for _, p := range runs {
				if g, err := cgroup.Open(p); err == nil {
					_, _ = containment.TeardownGroup(context.Background(), g, 0)
				}
			}
		}
		_ = unix.Rmdir(parent)
	})
	live := runid.Generate()
	lcStart(t, "", "run", "--cgroup-parent", parent, "--run-id", live, "--", "sh", "-c", "setsid sleep 300 & exec sleep 301")
	gl := lcWaitRunIn(t, parent, live, 2)
	liveProcs := lcPin(t, gl)

	owner := exec.Command("sleep", "300")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
	stale := runid.Generate()
	if out, err := exec.Command(binPath, "create", "--no-guardian", "--cgroup-parent", parent, "--run-id", stale, "--owner-pid", strconv.Itoa(owner.Process.Pid)).CombinedOutput(); err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	gsPath := filepath.Join(parent, cgroup.Prefix+stale)
	dir, err := os.Open(gsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	w := exec.Command("sh", "-c", "setsid sleep 300 & exec sleep 301")
	w.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Process.Kill(); _ = w.Wait() })
	gs := lcWaitRunIn(t, parent, stale, 2)
	staleProcs := lcPin(t, gs)

	scope := []string{"--cgroup-parent", parent, "--only-parents", "--run-id", live, "--run-id", stale}
	// Both owners alive: nothing to do.
	out, _, status := lcRun(t, append([]string{"gc"}, scope...)...)
	if status != 0 || strings.Contains(out, live) || strings.Contains(out, stale) || !strings.Contains(out, "2 live runs untouched") {
		t.Fatalf("gc with live owners: %d\n%s", status, out)
	}
	_ = owner.Process.Kill()
	_ = owner.Wait()
	out, _, status = lcRun(t, append([]string{"gc", "--dry-run"}, scope...)...)
	if status != 0 || !strings.Contains(out, "would-remove run "+stale) || strings.Contains(out, live) {
		t.Fatalf("gc --dry-run: %d\n%s", status, out)
	}
	if a := reaperAlive(staleProcs); a != len(staleProcs) {
		t.Fatalf("dry run killed %d processes", len(staleProcs)-a)
	}
	out, _, status = lcRun(t, append([]string{"gc", "--json", "--grace", "0"}, scope...)...)
	var rep inventory.GCReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || status != 0 {
		t.Fatalf("gc --json: %d %v\n%s", status, err, out)
	}
	if len(rep.Items) != 1 || rep.Items[0].ID != stale || rep.Items[0].Action != inventory.GCRemoved || rep.Items[0].Procs != 2 || rep.Live != 1 {
		t.Fatalf("gc report %+v", rep)
	}
	lcWaitExited(t, "stale run", staleProcs, 10*time.Second)
	if _, err := os.Stat(gsPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale run cgroup not removed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if left := reaper.WaitExited(ctx, liveProcs); len(left) != len(liveProcs) {
		t.Fatal("gc hurt the live run")
	}
}

// lcWaitRunIn waits until run id exists under parent (any known parent if
// "") and holds at least n processes.
func lcWaitRunIn(t *testing.T, parent, id string, n int) *cgroup.Group {
	t.Helper()
	var parents []string
	if parent != "" {
		parents = []string{parent}
	}
	var g *cgroup.Group
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("run %s has %d processes", id, n), func() bool {
		var err error
		if g, err = inventory.Lookup(id, parents...); err != nil {
			return false
		}
		pids, err := g.ProcsRecursive()
		return err == nil && len(pids) >= n
	})
	return g
}

// lcWaitCmdlines waits until the processes of run g have exactly the
// command lines want (in any order): a process is in the run from its fork
// on, before its exec has replaced its command line.
func lcWaitCmdlines(t *testing.T, g *cgroup.Group, want ...string) {
	t.Helper()
	sort.Strings(want)
	var got []string
	if !testenv.Within(30*time.Second, func() bool {
		got = cmdlinesOf(g)
		return strings.Join(got, "|") == strings.Join(want, "|")
	}) {
		t.Fatalf("run %s: processes %q, want %q", g.Path(), got, want)
	}
}

// cmdlinesOf returns the sorted command lines of g's processes (spaces
// between arguments).
func cmdlinesOf(g *cgroup.Group) []string {
	pids, _ := g.ProcsRecursive()
	var out []string
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		out = append(out, strings.Join(strings.FieldsFunc(string(b), func(r rune) bool { return r == 0 }), " "))
	}
	sort.Strings(out)
	return out
}

func TestDoctor(t *testing.T) {
	testenv.RequireCgroup2(t)
	out, stderr, status := lcRun(t, "doctor")
	if status != 0 {
		t.Fatalf("doctor: %d\n%s%s", status, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if len(lines) < 10 || !strings.Contains(last, "mechanism") || !strings.Contains(last, "cgroup") {
		t.Fatalf("doctor output:\n%s", out)
	}
	for _, name := range []string{"cgroup2", "cgroup.kill", "clone-into-cgroup", "controllers", "guardian", "pidfd", "subreaper", "systemd", "delegation", "root"} {
		if !strings.Contains(out, name) {
			t.Errorf("no %s check in:\n%s", name, out)
		}
	}
	js, _, _ := lcRun(t, "doctor", "--json")
	var rep struct {
		Checks       []map[string]string `json:"checks"`
		Mechanism    string              `json:"mechanism"`
		CgroupUsable bool                `json:"cgroup_usable"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || !rep.CgroupUsable || rep.Mechanism != "cgroup" || len(rep.Checks) != len(lines) {
		t.Fatalf("doctor --json: %v %+v", err, rep)
	}
	// The scratch run is gone again.
	if runs, _ := inventory.ListRuns(context.Background(), inventory.ListOptions{}); len(runs) > 0 {
		for _, r := range runs {
			if r.OwnerPID != 0 && !r.OwnerAlive && r.AgeSeconds < 5 {
				t.Errorf("doctor left a run behind: %+v", r)
			}
		}
	}
}

func reaperAlive(ps []*reaper.Pinned) int {
	n := 0
	for _, p := range ps {
		if !p.Exited() {
			n++
		}
	}
	return n
}

// vmRSS returns VmRSS of pid in kB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fs.ErrNotExist
}

// BenchmarkGuardianSIGKILL measures, per op, the time from SIGKILL of a
// `snakepit run` wrapper (worker + 3 setsid'd/forked grandchildren) until
// every process of the run has exited (checked through pidfds taken before
// the kill) and until the run cgroup is removed; and the guardian's RSS.
func BenchmarkGuardianSIGKILL(b *testing.B) {
	testenv.RequireCgroup2(b)
	var gone, removed []time.Duration
	var rss []int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := runid.Generate()
		cmd := exec.Command(binPath, "run", "--run-id", id, "--", "sh", "-c", lcTree)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		g := benchWaitRun(b, id, 4)
		pids, _ := g.ProcsRecursive()
		var ps []*reaper.Pinned
		for _, pid := range pids {
			if idn, err := reaper.IdentityOf(pid); err == nil {
				if p, err := reaper.Pin(idn); err == nil {
					ps = append(ps, p)
				}
			}
		}
		if rec, err := record.ReadCgroup(g.Path()); err == nil && rec.Guardian != nil {
			if kb, err := vmRSS(rec.Guardian.PID); err == nil {
				rss = append(rss, kb)
			}
		}
		b.StartTimer()
		t0 := time.Now()
		_ = cmd.Process.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		left := reaper.WaitExited(ctx, ps)
		cancel()
		gone = append(gone, time.Since(t0))
		for {
			if _, err := os.Stat(g.Path()); errors.Is(err, fs.ErrNotExist) || time.Since(t0) > 10*time.Second {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		removed = append(removed, time.Since(t0))
		b.StopTimer()
		_ = cmd.Wait()
		for _, p := range ps {
			p.Close()
		}
		if len(left) > 0 {
			b.Fatalf("%d survivors", len(left))
		}
		if removeRun(id) {
			b.Fatalf("run %s not removed by the guardian", id)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(medianDur(gone).Microseconds())/1000, "ms-to-all-gone")
	b.ReportMetric(float64(medianDur(removed).Microseconds())/1000, "ms-to-removed")
	if len(rss) > 0 {
		sort.Ints(rss)
		b.ReportMetric(float64(rss[len(rss)/2]), "guardian-rss-kB")
	}
}

func benchWaitRun(b *testing.B, id string, n int) *cgroup.Group {
	b.Helper()
	var g *cgroup.Group
	testenv.Eventually(b, 60*time.Second, fmt.Sprintf("run %s has %d processes", id, n), func() bool {
		var err error
		if g, err = inventory.Lookup(id); err != nil {
			return false
		}
		pids, err := g.ProcsRecursive()
		return err == nil && len(pids) >= n
	})
	return g
}

func medianDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkRunTrue is the wall time of `snakepit run -- /bin/true` with and
// without its guardian, next to bwrap's --unshare-pid --die-with-parent
// (the issue-7 target) when bwrap is installed.
func BenchmarkRunTrue(b *testing.B) {
	testenv.RequireCgroup2(b)
	cases := []struct {
		name string
		argv []string
	}{
		{"snakepit", []string{binPath, "run", "--", "/bin/true"}},
		{"snakepit-no-guardian", []string{binPath, "run", "--no-guardian", "--", "/bin/true"}},
	}
	if bw, err := exec.LookPath("bwrap"); err == nil {
		cases = append(cases, struct {
			name string
			argv []string
		}{"bwrap", []string{bw, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent", "/bin/true"}})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var ds []time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if out, err := exec.Command(c.argv[0], c.argv[1:]...).CombinedOutput(); err != nil {
					b.Fatalf("%v: %v %s", c.argv, err, out)
				}
				ds = append(ds, time.Since(t0))
			}
			b.ReportMetric(float64(medianDur(ds).Microseconds())/1000, "ms-median")
		})
	}
}

// BenchmarkStartGuardian measures the guardian's start cost as the wrapper
// pays it (StartGuardian: fork + exec until exec succeeded) and the time
// until the guardian is actually watching (it holds its per-owner lock);
// each iteration's guardian watches its own owner, which is then killed so
// the guardian exits.
func BenchmarkStartGuardian(b *testing.B) {
	testenv.RequireRoot(b)
	dir := b.TempDir()
	b.Setenv(record.DirEnv, filepath.Join(dir, "runs"))
	var start, watching []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		owner := exec.Command("sleep", "300")
		if err := owner.Start(); err != nil {
			b.Fatal(err)
		}
		o, err := record.OwnerOf(owner.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		lock := filepath.Join(dir, "guardians", fmt.Sprintf("%d-%d.lock", o.PID, o.Start))
		b.StartTimer()
		t0 := time.Now()
		g, err := guardian.Start(context.Background(), guardian.Options{Owner: o, Binary: binPath})
		start = append(start, time.Since(t0))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		for !lockHeld(lock) && time.Since(t0) < 10*time.Second {
			time.Sleep(50 * time.Microsecond)
		}
		watching = append(watching, time.Since(t0))
		p, err := reaper.Pin(g)
		_ = owner.Process.Kill()
		_ = owner.Wait()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if left := reaper.WaitExited(ctx, []*reaper.Pinned{p}); len(left) > 0 {
				_ = p.Signal(unix.SIGKILL)
				b.Errorf("guardian %d did not exit after its owner", g.PID)
			}
			cancel()
			p.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(medianDur(start).Microseconds())/1000, "ms-start")
	b.ReportMetric(float64(medianDur(watching).Microseconds())/1000, "ms-to-watching")
}

func lockHeld(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		_ = unix.Flock(fd, unix.LOCK_UN)
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}

// TestDieWithParent: SIGKILL of the process that started `snakepit run
// --die-with-parent` tears the run down (setsid'd grandchildren included)
// and the wrapper exits; without a guardian, so the wrapper alone does it.
func TestDieWithParent(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	// sh starts the wrapper and waits for it: the wrapper's parent.
	sh := exec.Command("sh", "-c", `"$0" run --die-with-parent --no-guardian --run-id "$1" -- sh -c "$2"; echo unreachable`, binPath, id, lcTree)
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Kill(-sh.Process.Pid, unix.SIGKILL); _ = sh.Wait() })
	g := lcWaitRun(t, id, 4)
	procs := lcPin(t, g)
	wrapper := wrapperOf(t, sh.Process.Pid)
	t0 := time.Now()
	if err := sh.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sh.Wait()
	lcWaitExited(t, "run processes", procs, 10*time.Second)
	lcWaitGone(t, id, 10*time.Second)
	lcWaitExited(t, "wrapper", []*reaper.Pinned{wrapper}, 10*time.Second)
	t.Logf("parent SIGKILLed -> run gone and wrapper exited in %v", time.Since(t0))
}

// TestDieWithParentThreadExit: the kernel sends the parent-death signal
// also when only the parent's thread that forked the wrapper exits (a
// thread pool's worker). The parent lives on, so the run must go on and its
// command must see no signal: it once got a SIGHUP.
func TestDieWithParentThreadExit(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := runid.Generate()
	// The command exits 42 on SIGHUP, 7 on the SIGUSR1 we send at the end.
	script := `trap "exit 42" HUP; trap "exit 7" USR1; sleep 300 & wait`
	type started struct {
		cmd *exec.Cmd
		tid int
		err error
	}
	sc := make(chan started, 1)
	release := make(chan struct{})
	var fork func()
	fork = func() {
		// Never unlocked: the thread that forks the wrapper exits with
		// this goroutine.
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The runtime never ends the main thread: fork from another
			// (this goroutine holds the main thread meanwhile).
			done := make(chan struct{})
			go func() { fork(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		cmd := exec.Command(binPath, "run", "--die-with-parent", "--no-guardian", "--run-id", id, "--", "sh", "-c", script)
		err := cmd.Start()
		sc <- started{cmd, unix.Gettid(), err}
		<-release // the wrapper has asked for the signal
	}
	go fork()
	s := <-sc
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait(); lcWaitGone(t, id, 10*time.Second) })
	// Once sleep runs, sh has set its traps, and the wrapper (which asks
	// for the signal before it starts the command) will get it.
	lcWaitRun(t, id, 2)
	close(release)
	released = true
	// The signal is sent as the thread exits, before its /proc entry goes.
	testenv.Eventually(t, 10*time.Second, "the forking thread's exit", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", s.tid))
		return errors.Is(err, fs.ErrNotExist)
	})
	if err := s.cmd.Process.Signal(unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	if code := s.cmd.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("snakepit run exited %d, want the command's 7 (42: the command got a SIGHUP)", code)
	}
	lcWaitGone(t, id, 10*time.Second)
}

// wrapperOf pins the snakepit child of pid.
func wrapperOf(t *testing.T, pid int) *reaper.Pinned {
	t.Helper()
	var p *reaper.Pinned
	testenv.Eventually(t, 10*time.Second, "the wrapper", func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			c, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			st, err := reaper.ReadStat(c)
			if err != nil || st.PPID != pid {
				continue
			}
			if exe, _ := os.Readlink("/proc/" + e.Name() + "/exe"); exe == binPath {
				p, err = reaper.Pin(reaper.Identity{PID: c, Start: st.Start})
				return err == nil
			}
		}
		return false
	})
	t.Cleanup(func() { _ = p.Signal(unix.SIGKILL); p.Close() })
	return p
}
