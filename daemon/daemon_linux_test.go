package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/spawn"
	"github.com/snakepit/snakepit/spec"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestRunLifecycle drives the API end to end: create, workers that
// double-fork and setsid, the event stream, stopping a worker, tearing the
// run down.
func TestRunLifecycle(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)

	evs, err := d.c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Close()

	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if run.State != api.RunActive || run.Owner != 0 || !strings.HasPrefix(run.Cgroup, d.parent+"/snakepit-") {
		t.Fatalf("run = %+v", run)
	}
	out := filepath.Join(d.dir, "out.log")
	// Worker 1 double-forks a sleeper and setsid's another, then waits.
	w1, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{
		Argv:   []string{"/bin/sh", "-c", `(sleep 300 &) ; setsid sh -c 'echo "run=$SNAKEPIT_RUN_ID"; exec sleep 301' & exec sleep 302`},
		Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "303"}, Env: []string{"PATH=/usr/bin:/bin", "X=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID != 1 || w2.ID != 2 || w1.State != api.WorkerRunning || w1.Placement != "clone3" {
		t.Fatalf("workers %+v %+v", w1, w2)
	}
	got, err := d.c.GetRun(ctx, run.ID)
	if err != nil || len(got.Workers) != 2 {
		t.Fatalf("GetRun = %+v, %v", got, err)
	}
	// cpu usage_usec is cgroup core (there on every cgroup2 host); the
	// workers have run, so it is non-zero.
	metrics, err := d.c.RunStats(ctx, run.ID)
	if err != nil {
		t.Fatalf("RunStats: %v", err)
	}
	if u := metrics.Stats.CPUUsageUsec; metrics.ID != run.ID || u == nil || *u == 0 {
		t.Fatalf("RunStats = %+v, want cpu_usage_usec > 0", metrics)
	}
	if _, err := d.c.RunStats(ctx, "zzzzzzz"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("RunStats of unknown run: %v, want ErrNotFound", err)
	}
	list, err := d.c.ListRuns(ctx)
	if err != nil || len(list) != 1 || list[0].ID != run.ID {
		t.Fatalf("ListRuns = %+v, %v", list, err)
	}
	// Wait until the setsid'd child wrote its line (the double fork is
	// done by then), and for worker 1 (sleep 302), its double-forked
	// sleep 300, the setsid'd sleep 301 and worker 2.
	waitFile(t, out, "run="+run.ID+"\n")
	waitProcs(t, run.Cgroup, 4)

	// Stop worker 1: it and its process group go (the double-forked
	// sleeper is in the group), the setsid'd one stays until teardown.
	sw, err := d.c.StopWorker(ctx, run.ID, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sw.State != api.WorkerExited || sw.Exit == nil || sw.Exit.Signal != int(syscall.SIGTERM) {
		t.Fatalf("stopped worker = %+v", sw)
	}
	// Its group members got the signals too; they die asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for countProcs(t, run.Cgroup) > 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := countProcs(t, run.Cgroup); n != 2 {
		t.Errorf("after stopping worker 1: %d processes in run, want 2 (worker 2 and the setsid'd sleeper): %s", n, describe(procsOf(t, run.Cgroup)))
	}
	td, err := d.c.DeleteRun(ctx, run.ID, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if td.ID != run.ID || td.Terminated != 2 || td.Error != "" {
		t.Errorf("teardown = %+v", td)
	}
	if _, err := os.Stat(run.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run cgroup still exists after DELETE: %v", err)
	}
	if _, err := d.c.GetRun(ctx, run.ID); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("GetRun after DELETE: %v, want ErrNotFound", err)
	}
	b, _ := os.ReadFile(out)
	if string(b) != "run="+run.ID+"\n" {
		t.Errorf("worker stdout = %q", b)
	}

	// The event stream saw everything, in order per worker.
	want := []string{
		api.EventRunCreated, api.EventWorkerStarted, api.EventWorkerStarted,
		api.EventWorkerExited, api.EventWorkerExited, api.EventRunTornDown,
	}
	var seen []string
	for len(seen) < len(want) {
		ev, err := evs.Next()
		if err != nil {
			t.Fatalf("events after %v: %v", seen, err)
		}
		if ev.Run != run.ID {
			t.Fatalf("event for another run: %+v", ev)
		}
		seen = append(seen, ev.Type)
		if ev.Type == api.EventWorkerExited && ev.Exit == nil {
			t.Errorf("worker_exited without exit: %+v", ev)
		}
		if ev.Type == api.EventRunTornDown && (ev.Teardown == nil || ev.Teardown.ID != run.ID) {
			t.Errorf("run_torn_down without teardown: %+v", ev)
		}
	}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("events = %v, want %v", seen, want)
	}
	st := d.status(t)
	if st.Runs != 0 || st.Workers != 0 || st.Mode != "configured" || st.RunParent != d.parent || st.Guardian == 0 {
		t.Errorf("status = %+v", st)
	}
}

// latencies collects request durations by kind.
type latencies struct {
	mu sync.Mutex
	m  map[string][]time.Duration
}

func newLatencies() *latencies { return &latencies{m: map[string][]time.Duration{}} }

func (l *latencies) add(kind string, t0 time.Time) {
	d := time.Since(t0)
	l.mu.Lock()
	l.m[kind] = append(l.m[kind], d)
	l.mu.Unlock()
}

func (l *latencies) log(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds := make([]string, 0, len(l.m))
	for k := range l.m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		v := l.m[k]
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		t.Logf("  %-24s n=%-5d p50=%-10v p90=%-10v max=%v", k, len(v),
			v[len(v)/2].Round(time.Microsecond), v[len(v)*9/10].Round(time.Microsecond), v[len(v)-1].Round(time.Microsecond))
	}
}

// waitFile waits until path holds want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", path, b, want)
		}
		time.Sleep(time.Millisecond) // bounded wait for another process to write
	}
}

func waitProcs(t *testing.T, cg string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for countProcs(t, cg) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d processes, want %d", cg, countProcs(t, cg), n)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // bounded wait for another process to fork
	}
}

func countProcs(t *testing.T, cg string) int {
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		t.Fatalf("read %s: %v", cg, err)
	}
	return len(strings.Fields(string(b)))
}

// TestBadInput sends every kind of bad request: each gets a 4xx with a
// JSON error body, and the daemon keeps serving.
func TestBadInput(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r := api.PathRuns + "/" + run.ID
	big := `{"argv":["` + strings.Repeat("x", 70<<10) + `"]}`
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed JSON", "POST", api.PathRuns, `{"id":`, 400, api.CodeInvalidJSON},
		{"not an object", "POST", api.PathRuns, `[1,2]`, 400, api.CodeInvalidJSON},
		{"unknown field", "POST", api.PathRuns, `{"id":"abc1234","bogus":true}`, 400, api.CodeInvalidJSON},
		{"trailing data", "POST", api.PathRuns, `{} {}`, 400, api.CodeInvalidJSON},
		{"wrong type", "POST", api.PathRuns, `{"id":7}`, 400, api.CodeInvalidJSON},
		{"invalid run ID upper", "POST", api.PathRuns, `{"id":"ABCDEFG"}`, 400, api.CodeInvalidRunID},
		{"invalid run ID traversal", "POST", api.PathRuns, `{"id":"../../x"}`, 400, api.CodeInvalidRunID},
		{"invalid run ID short", "POST", api.PathRuns, `{"id":"abc"}`, 400, api.CodeInvalidRunID},
		{"run ID in use", "POST", api.PathRuns, `{"id":"` + run.ID + `"}`, 409, api.CodeConflict},
		{"invalid run ID in path", "GET", api.PathRuns + "/ABC!DEF", "", 400, api.CodeInvalidRunID},
		{"dotdot in path", "GET", api.PathRuns + "/..%2f..%2fetc", "", 400, api.CodeInvalidRunID},
		{"long run ID in path", "DELETE", api.PathRuns + "/" + strings.Repeat("a", 300), "", 400, api.CodeInvalidRunID},
		{"unknown run", "GET", api.PathRuns + "/zzzzzzz", "", 404, api.CodeNotFound},
		{"argv missing", "POST", r + "/workers", `{}`, 400, api.CodeNoProgram},
		{"argv empty", "POST", r + "/workers", `{"argv":[]}`, 400, api.CodeNoProgram},
		{"argv empty program", "POST", r + "/workers", `{"argv":[""]}`, 400, api.CodeNoProgram},
		{"argv null", "POST", r + "/workers", `{"argv":null}`, 400, api.CodeNoProgram},
		{"worker body empty", "POST", r + "/workers", ``, 400, api.CodeInvalidJSON},
		{"worker unknown field", "POST", r + "/workers", `{"argv":["true"],"bogus":"root"}`, 400, api.CodeInvalidJSON},
		{"argv NUL", "POST", r + "/workers", `{"argv":["tr\u0000ue"]}`, 400, api.CodeBadRequest},
		{"env without =", "POST", r + "/workers", `{"argv":["true"],"env":["FOO"]}`, 400, api.CodeBadRequest},
		{"relative stdout", "POST", r + "/workers", `{"argv":["true"],"stdout":"out.log"}`, 400, api.CodeBadRequest},
		{"relative dir", "POST", r + "/workers", `{"argv":["true"],"dir":"tmp"}`, 400, api.CodeBadRequest},
		{"program not found", "POST", r + "/workers", `{"argv":["/nonexistent/prog"]}`, 400, api.CodeBadRequest},
		{"dir not found", "POST", r + "/workers", `{"argv":["true"],"dir":"/nonexistent"}`, 400, api.CodeBadRequest},
		{"body too large", "POST", r + "/workers", big, 413, api.CodeTooLarge},
		{"bad worker ID", "DELETE", r + "/workers/abc", "", 400, api.CodeBadRequest},
		{"negative worker ID", "DELETE", r + "/workers/-1", "", 400, api.CodeBadRequest},
		{"unknown worker", "DELETE", r + "/workers/99", "", 404, api.CodeNotFound},
		{"bad grace", "DELETE", r + "?grace=soon", "", 400, api.CodeBadRequest},
		{"negative grace", "DELETE", r + "?grace=-1s", "", 400, api.CodeBadRequest},
		{"huge grace", "DELETE", r + "?grace=1000h", "", 400, api.CodeBadRequest},
		{"null body", "POST", api.PathRuns, `null`, 400, api.CodeInvalidJSON},
		{"null worker body", "POST", r + "/workers", ` null `, 400, api.CodeInvalidJSON},
		{"empty run ID", "POST", api.PathRuns, `{"id": ""}`, 400, api.CodeInvalidRunID},
		{"overflowing grace seconds", "DELETE", r + "?grace=1e300", "", 400, api.CodeBadRequest},
		{"overflowing grace duration", "DELETE", r + "?grace=9999999999h", "", 400, api.CodeBadRequest},
		{"NaN grace", "DELETE", r + "?grace=NaN", "", 400, api.CodeBadRequest},
		{"wrong method", "PUT", api.PathRuns, `{}`, 405, api.CodeMethod},
		{"wrong method on run", "POST", r, `{}`, 405, api.CodeMethod},
		{"unknown endpoint", "GET", "/v2/runs", "", 404, api.CodeNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := raw(t, d.socket, c.method, c.path, c.body)
			var e api.Error
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%d %q: body is not a JSON error: %v", status, body, err)
			}
			if status != c.status || e.Code != c.code || e.Error == "" {
				t.Errorf("%s %s: %d %+v, want %d %s", c.method, c.path, status, e, c.status, c.code)
			}
			// A bad grace is named as given, not as a wrapped-around value.
			if _, g, ok := strings.Cut(c.path, "?grace="); ok && !strings.Contains(e.Error, strconv.Quote(g)) {
				t.Errorf("grace error %q does not name the input %q", e.Error, g)
			}
		})
	}
	// Still serving, the run intact, nothing started.
	got, err := d.c.GetRun(ctx, run.ID)
	if err != nil || len(got.Workers) != 0 {
		t.Fatalf("after bad input: %+v, %v", got, err)
	}
	if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
		t.Fatal(err)
	}
}

// missingID is a valid run ID no test creates.
const missingID = "zzzzzzz"

// Test UIDs and GIDs: not in /etc/passwd, the kernel does not care.
const (
	testGroup  = 64000 // the --group
	memberUID  = 64001 // in testGroup through a supplementary group
	memberGID  = 64001
	primaryUID = 64002 // in testGroup through its primary GID
	otherUID   = 64003 // in no group of ours
)

// TestAuthz checks access control from SO_PEERCRED/SO_PEERGROUPS: root,
// group members (supplementary and primary), other users; first with a
// socket every user may connect to (so the daemon's own checks answer),
// then with the default 0660 root:group socket (the kernel refuses
// others at connect).
func TestAuthz(t *testing.T) {
	testenv.RequireRoot(t)
	g := strconv.Itoa(testGroup)
	d := startDaemon(t, daemonOpts{args: []string{"--group", g, "--socket-mode", "0666"}})
	ctx := ctxT(t, 60*time.Second)
	rootRun, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = d.c.DeleteRun(context.Background(), rootRun.ID, 0) })
	// A directory only root may write, and one anyone may.
	rootOnly := filepath.Join(d.dir, "rootonly")
	open := filepath.Join(d.dir, "open")
	if err := os.Mkdir(rootOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(open, 0o777) // umask

	member := asUser(t, d.socket, memberUID, memberGID, []int{testGroup},
		helperReq{"POST", api.PathRuns, `{}`},
		helperReq{"GET", api.PathRuns, ""},
		helperReq{"GET", api.PathRuns + "/" + rootRun.ID, ""},
		helperReq{"DELETE", api.PathRuns + "/" + rootRun.ID, ""},
		helperReq{"POST", api.PathRuns + "/" + rootRun.ID + "/workers", `{"argv":["true"]}`},
		helperReq{"GET", api.PathStatus, ""},
		helperReq{"GET", api.PathRuns + "/" + missingID, ""},
	)
	wantStatus(t, "member create", member[0], 201)
	var mrun api.Run
	_ = json.Unmarshal([]byte(member[0].Body), &mrun)
	if mrun.Owner != memberUID {
		t.Errorf("member's run owner = %d", mrun.Owner)
	}
	var mlist []api.Run
	_ = json.Unmarshal([]byte(member[1].Body), &mlist)
	if member[1].Status != 200 || len(mlist) != 1 || mlist[0].ID != mrun.ID {
		t.Errorf("member list = %d %s, want only its own run", member[1].Status, member[1].Body)
	}
	// Another UID's run answers as a missing one: IDs are no oracle.
	wantStatus(t, "member GET root's run", member[2], 404)
	wantStatus(t, "member DELETE root's run", member[3], 404)
	wantStatus(t, "member start worker in root's run", member[4], 404)
	wantStatus(t, "member GET missing run", member[6], 404)
	if a, b := strings.ReplaceAll(member[2].Body, rootRun.ID, "ID"), strings.ReplaceAll(member[6].Body, missingID, "ID"); a != b {
		t.Errorf("another UID's run answers %s, a missing one %s", a, b)
	}
	wantStatus(t, "member status", member[5], 200)

	// The member's workers run as the member; files are opened as the member.
	mr := api.PathRuns + "/" + mrun.ID
	res := asUser(t, d.socket, memberUID, memberGID, []int{testGroup},
		helperReq{"POST", mr + "/workers", `{"argv":["sleep","300"],"stdout":"` + open + `/m.log"}`},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"stdout":"` + rootOnly + `/m.log"}`},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"stderr":"/etc/snakepit-authz-test"}`},
	)
	wantStatus(t, "member start worker", res[0], 201)
	var mw api.Worker
	_ = json.Unmarshal([]byte(res[0].Body), &mw)
	if uid, gid := procIDs(t, mw.PID); uid != memberUID || gid != memberGID {
		t.Errorf("member's worker runs as uid %d gid %d, want %d %d", uid, gid, memberUID, memberGID)
	}
	if st, err := os.Stat(filepath.Join(open, "m.log")); err != nil || st.Sys().(*syscall.Stat_t).Uid != memberUID {
		t.Errorf("member's stdout file: %v (want owned by %d)", err, memberUID)
	}
	wantStatus(t, "member stdout in root-only dir", res[1], 400)
	wantStatus(t, "member stderr in /etc", res[2], 400)
	if _, err := os.Stat("/etc/snakepit-authz-test"); err == nil {
		os.Remove("/etc/snakepit-authz-test")
		t.Errorf("daemon created /etc/snakepit-authz-test for a non-root client")
	}
	if _, err := os.Stat(filepath.Join(rootOnly, "m.log")); err == nil {
		t.Errorf("daemon created a file in a root-only directory for a non-root client")
	}

	// A member may name only itself: another user or group is 403, its own
	// numeric identity is fine (and changes nothing).
	id := strconv.Itoa(memberUID)
	who := asUser(t, d.socket, memberUID, memberGID, []int{testGroup},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"user":"nobody"}`},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"user":"0"}`},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"group":"0"}`},
		helperReq{"POST", mr + "/workers", `{"argv":["true"],"groups":["0"]}`},
		helperReq{"POST", mr + "/workers", `{"argv":["sleep","300"],"user":"` + id + `","groups":["` + strconv.Itoa(testGroup) + `"]}`},
	)
	for i, what := range []string{"user nobody", "user 0", "group 0", "groups [0]"} {
		wantStatus(t, "member names "+what, who[i], 403)
	}
	wantStatus(t, "member names itself", who[4], 201)
	var self api.Worker
	_ = json.Unmarshal([]byte(who[4].Body), &self)
	if uid, gid := procIDs(t, self.PID); uid != memberUID || gid != memberGID {
		t.Errorf("member's self-named worker runs as uid %d gid %d, want %d %d", uid, gid, memberUID, memberGID)
	}

	// Root sees and may manage the member's run.
	all, err := d.c.ListRuns(ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("root list = %d runs, %v", len(all), err)
	}

	// Primary GID membership counts too.
	prim := asUser(t, d.socket, primaryUID, testGroup, nil,
		helperReq{"POST", api.PathRuns, `{}`},
		helperReq{"DELETE", mr, ""},
	)
	wantStatus(t, "primary-gid member create", prim[0], 201)
	wantStatus(t, "primary-gid member DELETE other member's run", prim[1], 404)
	var prun api.Run
	_ = json.Unmarshal([]byte(prim[0].Body), &prun)
	prim = asUser(t, d.socket, primaryUID, testGroup, nil, helperReq{"DELETE", api.PathRuns + "/" + prun.ID + "?grace=0s", ""})
	wantStatus(t, "primary-gid member DELETE own run", prim[0], 200)

	// Everyone else: 403 on everything.
	other := asUser(t, d.socket, otherUID, otherUID, nil,
		helperReq{"POST", api.PathRuns, `{}`},
		helperReq{"GET", api.PathRuns, ""},
		helperReq{"GET", api.PathRuns + "/" + mrun.ID, ""},
		helperReq{"DELETE", api.PathRuns + "/" + mrun.ID, ""},
		helperReq{"GET", api.PathStatus, ""},
		helperReq{"GET", api.PathEvents, ""},
	)
	for i, r := range other {
		wantStatus(t, fmt.Sprintf("other user request %d", i), r, 403)
	}
	// The member's run and worker are untouched by all that.
	if !alive(mw.PID) {
		t.Errorf("member's worker died")
	}
	// Member deletes its own run.
	res = asUser(t, d.socket, memberUID, memberGID, []int{testGroup}, helperReq{"DELETE", mr + "?grace=0s", ""})
	wantStatus(t, "member DELETE own run", res[0], 200)
	if !waitGone(mw.PID, 10*time.Second) {
		t.Errorf("member's worker survived its run's teardown")
	}
	d.stop(true)

	// Default socket mode with a group: 0660 root:group. Others cannot
	// even connect; members can.
	d2 := startDaemon(t, daemonOpts{args: []string{"--group", g}})
	st, err := os.Stat(d2.socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Gid != testGroup {
		t.Errorf("socket mode %v gid %d, want 0660 gid %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, testGroup)
	}
	other = asUser(t, d2.socket, otherUID, otherUID, nil, helperReq{"GET", api.PathRuns, ""})
	if other[0].Err == "" || !strings.Contains(other[0].Err, "permission denied") {
		t.Errorf("other user on a 0660 socket: %+v, want permission denied at connect", other[0])
	}
	member = asUser(t, d2.socket, memberUID, memberGID, []int{testGroup}, helperReq{"GET", api.PathRuns, ""})
	wantStatus(t, "member on a 0660 socket", member[0], 200)
	// Without --group: 0600, root only.
	d3 := startDaemon(t, daemonOpts{})
	member = asUser(t, d3.socket, memberUID, memberGID, []int{testGroup}, helperReq{"GET", api.PathRuns, ""})
	if member[0].Err == "" {
		t.Errorf("member on a root-only daemon: %+v, want connect refused", member[0])
	}
}

func wantStatus(t *testing.T, what string, r helperRes, status int) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: got %d %s %s, want %d", what, r.Status, r.Body, r.Err, status)
		return
	}
	if status >= 400 {
		var e api.Error
		if json.Unmarshal([]byte(r.Body), &e) != nil || e.Code == "" {
			t.Errorf("%s: error body %q is not a JSON error", what, r.Body)
		}
	}
}

func procIDs(t *testing.T, pid int) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "Uid:" {
			uid, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "Gid:" {
			gid, _ = strconv.Atoi(f[1])
		}
	}
	return uid, gid
}

// stressDuration is how long TestConcurrentClients runs:
// $SNAKEPIT_STRESS_DURATION, else 30s in CI and 5s elsewhere.
func stressDuration(t *testing.T) time.Duration {
	if v := os.Getenv("SNAKEPIT_STRESS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SNAKEPIT_STRESS_DURATION: %v", err)
		}
		return d
	}
	if testenv.InCI() {
		return 30 * time.Second
	}
	return 5 * time.Second
}

// TestConcurrentClients runs 100 clients that create runs, start workers
// (some double-forking) and tear them down, concurrently, for
// stressDuration; afterwards the daemon has no runs, no run cgroups, and
// as many goroutines and open fds as before.
func TestConcurrentClients(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	// Warm up: spawner threads and the like start on first use, once.
	{
		ctx := ctxT(t, 30*time.Second)
		run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "60"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	base := d.status(t)
	dur := stressDuration(t)
	const clients = 100
	ctx := ctxT(t, dur+2*time.Minute)
	deadline := time.Now().Add(dur)
	lat := newLatencies()
	var (
		cycles, workers atomic.Int64
		errMu           sync.Mutex
		errs            []string
		wg              sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		errMu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		errMu.Unlock()
	}
	cs := make([]*client.Client, clients)
	for i := range clients {
		cs[i] = client.New(d.socket)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[i]
			for n := 0; time.Now().Before(deadline); n++ {
				t0 := time.Now()
				run, err := c.CreateRun(ctx, api.CreateRunRequest{})
				if err != nil {
					fail("client %d create: %v", i, err)
					return
				}
				lat.add("create", t0)
				argv := []string{"sleep", "60"}
				if n%2 == 0 {
					argv = []string{"/bin/sh", "-c", "(sleep 60 &); setsid sleep 61 & exec sleep 62"}
				}
				for range 2 {
					t0 = time.Now()
					if _, err := c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: argv}); err != nil {
						fail("client %d start: %v", i, err)
					} else {
						workers.Add(1)
					}
					lat.add("start worker", t0)
				}
				if n%5 == 0 {
					t0 = time.Now()
					if _, err := c.StopWorker(ctx, run.ID, 1, 0); err != nil {
						fail("client %d stop worker: %v", i, err)
					}
					lat.add("stop worker", t0)
				}
				grace := time.Duration(0)
				if n%3 == 0 {
					grace = 50 * time.Millisecond
				}
				t0 = time.Now()
				td, err := c.DeleteRun(ctx, run.ID, grace)
				if err != nil || td.Error != "" {
					fail("client %d delete: %v %s", i, err, td.Error)
				}
				lat.add(fmt.Sprintf("delete run (grace %v)", grace), t0)
				cycles.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d clients, %v: %d runs created and torn down, %d workers", clients, dur, cycles.Load(), workers.Load())
	lat.log(t)
	for _, e := range errs {
		t.Error(e)
	}
	if left := runCgroups(d.parent); len(left) > 0 {
		t.Errorf("run cgroups left: %v", left)
	}
	// Goroutines and fds return to the baseline once idle connections are
	// gone (each open connection holds two goroutines and an fd).
	var st api.Status
	settle := time.Now().Add(15 * time.Second)
	for {
		// A connection can return to a client's idle pool just after a
		// CloseIdleConnections: close again until the daemon is back.
		for _, c := range cs {
			c.Close()
		}
		st = d.status(t)
		if st.Goroutines <= base.Goroutines+spawn.MaxThreads-1 && st.OpenFDs <= base.OpenFDs || time.Now().After(settle) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the daemon notices closed connections asynchronously
	}
	t.Logf("daemon before: %d goroutines, %d fds, RSS %.1f MB; after: %d goroutines, %d fds, RSS %.1f MB",
		base.Goroutines, base.OpenFDs, float64(base.RSSBytes)/(1<<20), st.Goroutines, st.OpenFDs, float64(st.RSSBytes)/(1<<20))
	if st.Runs != 0 || st.Workers != 0 {
		t.Errorf("after the storm: %d runs, %d workers", st.Runs, st.Workers)
	}
	// The spawner keeps the threads a burst of starts made it add (one
	// parked goroutine each; ending them would fire their children's
	// Pdeathsig).
	if st.Goroutines > base.Goroutines+spawn.MaxThreads-1 {
		t.Errorf("goroutines leaked: %d before, %d after", base.Goroutines, st.Goroutines)
	}
	if st.OpenFDs > base.OpenFDs {
		t.Errorf("fds leaked: %d before, %d after", base.OpenFDs, st.OpenFDs)
	}
}

// TestShutdown: SIGTERM tears down every run (double-forked and setsid'd
// processes too), removes the cgroups and the socket, and exits 0.
func TestShutdown(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	var pids []int
	for range 3 {
		run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			w, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{
				Argv: []string{"/bin/sh", "-c", "trap '' TERM; (sleep 300 &); setsid sleep 301 & exec sleep 302"},
			})
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, w.PID)
		}
		waitProcs(t, run.Cgroup, 6)
		pids = append(pids, procsOf(t, run.Cgroup)...)
	}
	st := d.status(t)
	d.stop(true)
	if !d.waitNotify("STOPPING=1", 5*time.Second) || !d.statusSeen("stopping: tearing down 3 runs") {
		t.Errorf("sd_notify messages %q: want STOPPING=1 with a status", d.msgs)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived the daemon's shutdown", pid)
		}
	}
	if left := runCgroups(d.parent); len(left) > 0 {
		t.Errorf("run cgroups left: %v", left)
	}
	if _, err := os.Stat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left: %v", err)
	}
	if _, err := os.Stat(d.parent); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup parent the daemon made is left: %v", err)
	}
	if !waitGone(st.Guardian, 10*time.Second) {
		t.Errorf("guardian %d still running after the daemon exited", st.Guardian)
	}
}

// describe renders pid, pgid, sid and argv of each pid.
func describe(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "\n  %s | %s", strings.ReplaceAll(string(cmd), "\x00", " "), stat)
	}
	return b.String()
}

func procsOf(t *testing.T, cg string) []int {
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// TestSIGKILLGuardian: a SIGKILLed daemon runs no cleanup; its guardian
// tears the runs down.
func TestSIGKILLGuardian(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"/bin/sh", "-c", "(sleep 300 &); exec sleep 301"}}); err != nil {
		t.Fatal(err)
	}
	waitProcs(t, run.Cgroup, 2)
	pids := procsOf(t, run.Cgroup)
	st := d.status(t)
	t0 := time.Now()
	d.kill()
	for _, pid := range pids {
		if !waitGone(pid, 10*time.Second) {
			t.Errorf("pid %d survived its SIGKILLed daemon", pid)
		}
	}
	t.Logf("all run processes gone %v after SIGKILL of the daemon", time.Since(t0))
	if !waitGone(st.Guardian, 10*time.Second) {
		t.Errorf("guardian %d did not exit", st.Guardian)
	}
	if _, err := os.Stat(run.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run cgroup left after the guardian: %v", err)
	}
	// A leftover socket file of the dead daemon does not stop a restart.
	d2 := startDaemon(t, daemonOpts{parent: d.parent, dir: d.dir})
	if st := d2.status(t); st.StaleRunsRemoved != 0 {
		t.Errorf("stale runs removed = %d, want 0 (the guardian got them)", st.StaleRunsRemoved)
	}
}

// TestRestartGC: without a guardian, a SIGKILLed daemon's runs stay; the
// next daemon on the same parent removes them at start and says so in
// STATUS= and /v1/status.
func TestRestartGC(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--no-guardian"}})
	ctx := ctxT(t, 60*time.Second)
	var pids []int
	for range 2 {
		run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"/bin/sh", "-c", "(sleep 300 &); exec sleep 301"}}); err != nil {
			t.Fatal(err)
		}
		waitProcs(t, run.Cgroup, 2)
		pids = append(pids, procsOf(t, run.Cgroup)...)
	}
	d.kill()
	// Direct children die by Pdeathsig; the double-forked ones stay.
	if left := runCgroups(d.parent); len(left) != 2 {
		t.Fatalf("run cgroups after SIGKILL: %v, want 2", left)
	}
	d2 := startDaemon(t, daemonOpts{parent: d.parent, dir: d.dir, args: []string{"--no-guardian"}})
	st := d2.status(t)
	if st.StaleRunsRemoved != 2 {
		t.Errorf("stale runs removed = %d, want 2", st.StaleRunsRemoved)
	}
	if !d2.statusSeen("stale runs removed at start: 2") {
		t.Errorf("STATUS= lines %q do not count the stale runs", d2.statusLines)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d of a stale run survived gc", pid)
		}
	}
	if left := runCgroups(d.parent); len(left) != 0 {
		t.Errorf("run cgroups after gc: %v", left)
	}
}

// TestSecondDaemonRefused: a second daemon on a live socket exits non-zero
// and leaves the first alone.
func TestSecondDaemonRefused(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	out, err := execOutput(binary, "daemon", "--socket", d.socket, "--cgroup-parent", d.parent, "--no-guardian")
	if err == nil || !strings.Contains(out, "already listening") {
		t.Errorf("second daemon: %v %s", err, out)
	}
	d.status(t)

	// One that is starting (its lock taken, no socket yet) counts too:
	// two started at once both found a stale socket and bound it.
	sock := filepath.Join(t.TempDir(), "sock")
	f, err := os.OpenFile(sock+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	out, err = execOutput(binary, "daemon", "--socket", sock, "--cgroup-parent", d.parent, "--no-guardian")
	if err == nil || !strings.Contains(out, "already listening") {
		t.Errorf("daemon beside a starting one: %v %s", err, out)
	}
}

// TestDaemonRSS measures the daemon's resident memory with 100 runs of 5
// workers each (target: under 30 MB).
func TestDaemonRSS(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 2*time.Minute)
	const runs, per = 100, 5
	var wg sync.WaitGroup
	errc := make(chan error, runs)
	for range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
			if err != nil {
				errc <- err
				return
			}
			for range per {
				if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "600"}}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	st := d.status(t)
	hwm := procStatusKB(t, d.cmd.Process.Pid, "VmHWM:")
	t.Logf("daemon with %d runs, %d workers: RSS %.1f MB (peak %.1f MB), %d goroutines, %d fds",
		st.Runs, st.Workers, float64(st.RSSBytes)/(1<<20), float64(hwm)/1024, st.Goroutines, st.OpenFDs)
	if st.Runs != runs || st.Workers != runs*per {
		t.Errorf("status %+v", st)
	}
	if st.RSSBytes > 30<<20 {
		t.Errorf("RSS %.1f MB, target under 30 MB", float64(st.RSSBytes)/(1<<20))
	}
	d.stop(true)
}

func procStatusKB(t *testing.T, pid int, key string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n
		}
	}
	return 0
}

// TestCLIThroughDaemon: with SNAKEPIT_SOCKET pointing at the daemon,
// `snakepit ps` lists the daemon's runs and `snakepit kill` has the daemon
// tear one down (its state stays right).
func TestCLIThroughDaemon(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "300"}}); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), api.SocketEnv+"="+d.socket)
	ps := exec.Command(binary, "ps", "--json")
	ps.Env = env
	out, err := ps.Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	var runs []struct {
		ID       string `json:"id"`
		OwnerPID int    `json:"owner_pid"`
		Procs    int    `json:"procs"`
	}
	if err := json.Unmarshal(out, &runs); err != nil {
		t.Fatalf("ps output %s: %v", out, err)
	}
	found := false
	for _, r := range runs {
		if r.ID == run.ID {
			found = true
			if r.OwnerPID != d.cmd.Process.Pid || r.Procs != 1 {
				t.Errorf("ps shows %+v, want owner %d with 1 process", r, d.cmd.Process.Pid)
			}
		}
	}
	if !found {
		t.Errorf("ps --json does not list the daemon's run %s: %s", run.ID, out)
	}
	kill := exec.Command(binary, "kill", "--grace", "0s", run.ID)
	kill.Env = env
	if out, err := kill.CombinedOutput(); err != nil {
		t.Fatalf("kill: %v: %s", err, out)
	}
	if _, err := d.c.GetRun(ctx, run.ID); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("after snakepit kill, the daemon still has the run: %v", err)
	}
	if _, err := os.Stat(run.Cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run cgroup left: %v", err)
	}
}

// TestLimits: --max-workers holds under concurrent starts (the slot is
// taken before the spawn, not counted after it), and --max-runs likewise
// for concurrent creates. Refusals are 429 with code "limit".
func TestLimits(t *testing.T) {
	const maxWorkers, maxRuns, tries = 3, 2, 12
	d := startDaemon(t, daemonOpts{args: []string{"--max-workers", fmt.Sprint(maxWorkers), "--max-runs", fmt.Sprint(maxRuns)}})
	ctx := ctxT(t, 60*time.Second)

	// count runs f tries times at once and counts successes and limit refusals.
	count := func(f func() error) (ok, limited int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := f()
				var ae *client.APIError
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && ae.Code == api.CodeLimit:
					limited++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		return ok, limited
	}

	runs := make(chan string, tries)
	ok, limited := count(func() error {
		r, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err == nil {
			runs <- r.ID
		}
		return err
	})
	if ok != maxRuns || limited != tries-maxRuns {
		t.Fatalf("%d concurrent creates with --max-runs %d: %d made, %d refused for the limit", tries, maxRuns, ok, limited)
	}
	id := <-runs
	ok, limited = count(func() error {
		_, err := d.c.StartWorker(ctx, id, api.StartWorkerRequest{Argv: []string{"sleep", "300"}})
		return err
	})
	if ok != maxWorkers || limited != tries-maxWorkers {
		t.Errorf("%d concurrent starts with --max-workers %d: %d started, %d refused for the limit", tries, maxWorkers, ok, limited)
	}
	if got, err := d.c.GetRun(ctx, id); err != nil || len(got.Workers) != maxWorkers {
		t.Errorf("run has %d workers (%v), want %d", len(got.Workers), err, maxWorkers)
	}
	// Only running workers count: once one exits, a new one may start (a
	// pool that restarts its workers must not run out of slots), and the
	// exited one is still listed with its status.
	got, err := d.c.GetRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := d.c.StopWorker(ctx, id, got.Workers[0].ID, 0)
	if err != nil || stopped.State != api.WorkerExited {
		t.Fatalf("StopWorker: %+v, %v", stopped, err)
	}
	if _, err := d.c.StartWorker(ctx, id, api.StartWorkerRequest{Argv: []string{"sleep", "300"}}); err != nil {
		t.Errorf("start after a worker exited, with --max-workers %d: %v", maxWorkers, err)
	}
	if got, err := d.c.GetRun(ctx, id); err != nil || len(got.Workers) != maxWorkers+1 || got.Workers[0].State != api.WorkerExited {
		t.Errorf("GetRun after the restart = %+v, %v; want %d workers, the first exited", got.Workers, err, maxWorkers+1)
	}
	if _, err := d.c.StartWorker(ctx, id, api.StartWorkerRequest{Argv: []string{"sleep", "300"}}); err == nil {
		t.Errorf("a start beyond %d running workers was accepted", maxWorkers)
	}

	// A refused create holds no slot: after a teardown frees the run, a
	// new run can be made again.
	if _, err := d.c.DeleteRun(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.CreateRun(ctx, api.CreateRunRequest{}); err != nil {
		t.Errorf("create after a teardown freed a slot: %v", err)
	}
}

// An event stream whose ctx ends, or that is closed, ends with io.EOF, as
// its doc says (not the read's i/o timeout).
func TestEventStreamEndsWithEOF(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx := ctxT(t, 60*time.Second)
	for _, end := range []string{"ctx", "close"} {
		ectx, cancel := context.WithCancel(ctx)
		evs, err := d.c.Events(ectx)
		if err != nil {
			t.Fatal(err)
		}
		run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := evs.Next(); err != nil {
			t.Fatalf("first event: %v", err)
		}
		if end == "ctx" {
			cancel()
		} else {
			evs.Close()
		}
		for {
			_, err := evs.Next()
			if err == nil {
				continue // events that were on their way
			}
			if err != io.EOF {
				t.Errorf("after its %s ended: %v, want io.EOF", end, err)
			}
			break
		}
		cancel()
		evs.Close()
		if _, err := d.c.DeleteRun(ctx, run.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// A stop tears down with the daemon's --grace, also a run whose DELETE is
// waiting out a longer grace of its own: the shutdown joined that
// teardown and waited its grace (minutes, past systemd's stop timeout).
func TestShutdownCutsALongerDeleteGrace(t *testing.T) {
	d := startDaemon(t, daemonOpts{}) // --grace 1s
	ctx := ctxT(t, 60*time.Second)
	run, err := d.c.CreateRun(ctx, api.CreateRunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(d.dir, "armed.log")
	if _, err := d.c.StartWorker(ctx, run.ID, api.StartWorkerRequest{
		Argv:   []string{"/bin/sh", "-c", `trap "" TERM; echo armed; exec sleep 1000`},
		Stdout: &out, Ready: spec.Readiness{Line: "^armed$"},
	}); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() {
		_, err := d.c.DeleteRun(ctx, run.ID, 5*time.Minute)
		deleted <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the run stopping", func() bool {
		r, err := d.c.GetRun(ctx, run.ID)
		return err == nil && r.State == api.RunStopping
	})
	d.stop(true) // fails the test if the daemon outlives SIGTERM by 30 s
	<-deleted
}
