//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// defaultPath is the whole environment of a worker whose request has none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runState is a run owned by the daemon.
type runState struct {
	run      *snakepit.Run
	owner    int
	created  time.Time
	grace    time.Duration // the spec's, else the daemon's: DELETE's default
	warnings []string

	mu       sync.Mutex
	workers  []*workerState // in start order; exited ones are kept for their status
	running  int            // workers not yet exited
	starting int            // workers being started: they count against the limit already
	stopping bool
	removed  bool // torn down and forgotten: its exited workers no longer count (exitedOver)

	tdOnce   sync.Once
	td       api.Teardown
	watchers sync.WaitGroup // this run's workers whose exit is not recorded yet (workerExited)
}

type workerState struct {
	w       *snakepit.Worker
	argv    []string
	started time.Time
	exit    *api.Exit       // guarded by runState.mu; set once exited
	ready   *spec.ReadyInfo // guarded by runState.mu; set once ready
}

// httpError is an error with its HTTP status and API code.
type httpError struct {
	status int
	code   string
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func errf(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, err: fmt.Errorf(format, args...)}
}

func toExit(s snakepit.ExitStatus) *api.Exit {
	e := &api.Exit{Code: s.ShellCode()}
	if s.Signal != 0 {
		e.Signal = int(s.Signal)
		e.SignalName = unix.SignalName(s.Signal)
	}
	return e
}

// view renders the run; the caller holds no lock.
func (rs *runState) view() api.Run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := api.Run{
		ID:       rs.run.ID(),
		State:    api.RunActive,
		Owner:    rs.owner,
		Cgroup:   rs.run.CgroupPath(),
		Created:  rs.created,
		Workers:  make([]api.Worker, 0, len(rs.workers)),
		Warnings: rs.warnings,
	}
	if rs.stopping {
		r.State = api.RunStopping
	}
	for _, ws := range rs.workers {
		r.Workers = append(r.Workers, ws.viewLocked())
	}
	return r
}

func (ws *workerState) viewLocked() api.Worker {
	w := api.Worker{
		ID:        ws.w.WID,
		PID:       ws.w.PID(),
		Argv:      ws.argv,
		State:     api.WorkerRunning,
		Started:   ws.started,
		Placement: string(ws.w.Placement),
		Ready:     ws.ready,
	}
	if ws.exit != nil {
		w.State = api.WorkerExited
		e := *ws.exit
		w.Exit = &e
	}
	return w
}

func (d *Daemon) lookup(id string) (*runState, *httpError) {
	if err := runid.Validate(id); err != nil {
		return nil, errf(http.StatusBadRequest, api.CodeInvalidRunID, "%v", err)
	}
	d.mu.Lock()
	rs := d.runs[id]
	d.mu.Unlock()
	if rs == nil {
		return nil, errNoRun(id)
	}
	return rs, nil
}

// createRun makes a run owned by uid from its spec (validated by
// spec.DecodeRun).
func (d *Daemon) createRun(ctx context.Context, uid int, req api.CreateRunRequest) (*runState, *httpError) {
	grace := time.Duration(req.Grace)
	if grace == 0 {
		grace = d.grace
	}
	if grace > d.maxGrace {
		return nil, errf(http.StatusBadRequest, api.CodeInvalidDuration, "grace %v: at most %v", grace, d.maxGrace)
	}
	d.mu.Lock()
	switch {
	case d.closing:
		d.mu.Unlock()
		return nil, errf(http.StatusServiceUnavailable, api.CodeUnavailable, "daemon is shutting down")
	case req.ID != "" && d.runs[req.ID] != nil:
		// Still being torn down (its cgroup may be gone already): a run
		// made under its ID now would lose its entry to that teardown.
		d.mu.Unlock()
		return nil, errf(http.StatusConflict, api.CodeConflict, "run %s already exists", req.ID)
	}
	if herr := d.takeRun(uid); herr != nil {
		d.mu.Unlock()
		return nil, herr
	}
	d.creating++
	d.inflight.Add(1)
	d.mu.Unlock()
	defer d.inflight.Done()

	var (
		r   *snakepit.Run
		err error
	)
	// The daemon's guardian goes into the record Create writes (no second
	// write of the xattr).
	var guardian *reaper.Identity
	if d.guardian.PID != 0 {
		g := d.guardian
		guardian = &g
	}
	// A generated ID that collides (EEXIST) is retried with a fresh one.
	for attempt := 0; attempt < 3; attempt++ {
		opts := snakepit.FromSpec(req)
		opts.CgroupParent, opts.Reaper, opts.Grace, opts.Guardian = d.parent, d.rp, grace, guardian
		// The daemon's own guardian watches its runs; with none
		// configured (NoGuardian) there is none.
		opts.NoGuardian = guardian == nil
		opts.Mode = snakepit.ModeCgroup // runs are read through their cgroup: no POSIX fallback
		// A worker's user must not be able to stop its spawn between
		// setuid and exec, which would hold the whole daemon: the
		// identity is dropped in our own __exec (the daemon is snakepit).
		opts.IdentityHelper = "/proc/self/exe"
		opts.OnEvent = func(e snakepit.Event) { d.limitEvent(uid, e) }
		r, err = snakepit.Create(ctx, opts)
		if req.ID != "" || !errors.Is(err, cgroup.ErrExists) {
			break
		}
	}
	if err != nil {
		d.mu.Lock()
		d.creating--
		d.mu.Unlock()
		d.releaseRun(uid)
		switch {
		case errors.Is(err, cgroup.ErrExists):
			return nil, errf(http.StatusConflict, api.CodeConflict, "run %s already exists", req.ID)
		}
		if herr := specError(err); herr != nil {
			return nil, herr // a limit whose controller is missing, no such netns, ...
		}
		return nil, errf(http.StatusInternalServerError, api.CodeInternal, "create run: %v", err)
	}
	rs := &runState{run: r, owner: uid, created: time.Now().UTC(), grace: grace}
	for _, w := range r.Warnings() {
		rs.warnings = append(rs.warnings, w.Error())
	}
	d.mu.Lock()
	d.creating--
	d.runs[r.ID()] = rs
	d.mu.Unlock()
	d.metrics.runsCreated.WithLabelValues(r.Mechanism()).Inc()
	d.log.Info("run created", "run", r.ID(), "uid", uid, "mechanism", r.Mechanism(), "cgroup", r.CgroupPath())
	for _, w := range rs.warnings {
		d.log.Info("run created without a limit", "run", r.ID(), "uid", uid, "warning", w)
	}
	d.publish(rs, api.Event{Type: api.EventRunCreated, Run: r.ID()})
	d.kickStatus()
	return rs, nil
}

// validateWorkerRequest adds the daemon's own rules to a decoded worker
// spec: its paths are the caller's files on this host, so absolute.
func validateWorkerRequest(req *api.StartWorkerRequest) *httpError {
	for name, p := range map[string]*string{"dir": &req.Dir, "stdout": req.Stdout, "stderr": req.Stderr} {
		if p == nil || (name == "dir" && *p == "") {
			continue
		}
		if !filepath.IsAbs(*p) {
			return errf(http.StatusBadRequest, api.CodeBadRequest, "%s %q is not an absolute path", name, truncate(*p))
		}
	}
	if time.Duration(req.ReadyTimeout) > maxReadyTimeout {
		return errf(http.StatusBadRequest, api.CodeInvalidDuration, "ready_timeout %v: at most %v", time.Duration(req.ReadyTimeout), maxReadyTimeout)
	}
	return nil
}

// maxReadyTimeout bounds how long a start request may wait for readiness.
const maxReadyTimeout = 10 * time.Minute

// readyBound is how long a start request waits for readiness: the
// worker's ready_timeout, else the request timeout.
func readyBound(req api.StartWorkerRequest) time.Duration {
	if t := time.Duration(req.ReadyTimeout); t > 0 && t <= maxReadyTimeout {
		return t
	}
	return requestTimeout
}

// credentialFor is who a worker runs as. Root may name anyone; a member
// runs as itself, and may name only its own user and groups (403 else).
func credentialFor(p peer, req api.StartWorkerRequest) (snakepit.Credential, *httpError) {
	asked := req.Credential()
	if p.uid == 0 {
		return asked, nil
	}
	own := snakepit.Credential{User: strconv.Itoa(p.uid), Group: strconv.Itoa(p.gid), Groups: []string{}, NewPrivileges: asked.NewPrivileges}
	for _, g := range p.groups {
		own.Groups = append(own.Groups, strconv.Itoa(g))
	}
	if asked.IsZero() {
		return own, nil
	}
	// What is not asked for is the member's own: its user, its group.
	q := asked
	if q.User == "" {
		q.User = own.User
	}
	if q.Group == "" && asked.User == "" {
		q.Group = own.Group
	}
	rc, err := jail.Resolve(q)
	if err != nil {
		if herr := specError(err); herr != nil {
			return own, herr
		}
		return own, errf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
	}
	if rc.UID() != p.uid || (asked.Group != "" && rc.GID() != p.gid && !p.inGroup(rc.GID())) {
		return own, errf(http.StatusForbidden, api.CodeForbidden, "a member's workers run as itself (uid %d): user %q group %q not allowed", p.uid, truncate(asked.User), truncate(asked.Group))
	}
	for _, g := range rc.Groups() {
		if g != p.gid && !p.inGroup(g) {
			return own, errf(http.StatusForbidden, api.CodeForbidden, "a member's workers run as itself: group %d not allowed", g)
		}
	}
	if asked.Group != "" {
		own.Group = strconv.Itoa(rc.GID())
	}
	if asked.Groups != nil {
		// A narrower set of the member's groups, or none.
		own.Groups = []string{}
		for _, g := range rc.Groups() {
			own.Groups = append(own.Groups, strconv.Itoa(g))
		}
	}
	return own, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// startWorker starts a worker in rs for peer p.
func (d *Daemon) startWorker(ctx context.Context, p peer, rs *runState, req api.StartWorkerRequest) (api.Worker, *httpError) {
	if herr := validateWorkerRequest(&req); herr != nil {
		return api.Worker{}, herr
	}
	// The slot is taken under the lock, so concurrent starts cannot all
	// pass the check and overshoot the limit together.
	rs.mu.Lock()
	switch {
	case rs.stopping:
		rs.mu.Unlock()
		return api.Worker{}, errf(http.StatusConflict, api.CodeConflict, "run %s is being torn down", rs.run.ID())
	}
	if herr := d.takeWorker(rs.owner); herr != nil {
		rs.mu.Unlock()
		return api.Worker{}, herr
	}
	rs.starting++
	rs.mu.Unlock()
	added := false
	defer func() {
		if !added {
			rs.mu.Lock()
			rs.starting--
			rs.mu.Unlock()
			d.releaseWorker(rs.owner)
		}
	}()

	var files []*os.File
	defer func() {
		// The child has its own copies once started.
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(name string, path *string) (*os.File, *httpError) {
		if path == nil {
			return nil, nil
		}
		f, err := d.openAs(ctx, p, *path)
		if errors.Is(err, ErrTooManyOpens) {
			return nil, errf(http.StatusTooManyRequests, api.CodeLimit, "%s: %v", name, err)
		}
		if err != nil {
			return nil, errf(http.StatusBadRequest, api.CodeBadRequest, "%s: %v", name, err)
		}
		files = append(files, f)
		return f, nil
	}
	stdout, herr := open("stdout", req.Stdout)
	if herr != nil {
		return api.Worker{}, herr
	}
	if req.Ready.Line != "" && stdout != nil && !copyable(stdout) {
		// With a readiness line the daemon itself writes the output on:
		// a device that blocks the write would hold it for ever.
		return api.Worker{}, errf(http.StatusBadRequest, api.CodeBadRequest,
			"stdout: with ready.line it must be a regular file or /dev/null (the daemon copies the output)")
	}
	stderr, herr := open("stderr", req.Stderr)
	if herr != nil {
		return api.Worker{}, herr
	}
	env := req.Env
	if env == nil {
		env = []string{defaultPath}
	}
	dir := req.Dir
	if dir == "" {
		dir = "/"
	}
	c := snakepit.CommandFromSpec(req)
	c.Env, c.Dir = env, dir
	cred, herr := credentialFor(p, req)
	if herr != nil {
		return api.Worker{}, herr
	}
	c.Credential = cred
	// Typed nils would make exec.Cmd use a nil *os.File.
	if stdout != nil {
		c.Stdout = stdout
	}
	if stderr != nil {
		c.Stderr = stderr
	}
	w, err := d.startBounded(ctx, rs, c)
	if err != nil {
		switch {
		case errors.Is(err, ErrTooManyStarts):
			return api.Worker{}, errf(http.StatusTooManyRequests, api.CodeLimit, "%v", err)
		case errors.Is(err, ErrStartTimeout):
			return api.Worker{}, errf(http.StatusGatewayTimeout, api.CodeInternal, "%v", err)
		case errors.Is(err, snakepit.ErrClosed):
			return api.Worker{}, errf(http.StatusConflict, api.CodeConflict, "run %s is being torn down", rs.run.ID())
		}
		if herr := specError(err); herr != nil {
			return api.Worker{}, herr
		}
		switch {
		case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission),
			errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.ENOTDIR):
			return api.Worker{}, errf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
		}
		return api.Worker{}, errf(http.StatusInternalServerError, api.CodeInternal, "%v", err)
	}
	ws := &workerState{w: w, argv: req.Argv, started: time.Now().UTC()}
	rs.mu.Lock()
	if rs.stopping {
		// Torn down while it started (the kill ended a start stuck
		// before exec): the run's teardown waits for the worker; it is
		// not listed.
		rs.mu.Unlock()
		return api.Worker{}, errf(http.StatusConflict, api.CodeConflict, "run %s is being torn down", rs.run.ID())
	}
	rs.workers = append(rs.workers, ws)
	rs.running++
	rs.starting--
	added = true
	view := ws.viewLocked()
	// Counted before the teardown, which sets stopping under rs.mu, can
	// wait for the run's watchers.
	d.watchers.Add(1)
	rs.watchers.Add(1)
	rs.mu.Unlock()
	d.workers.Add(1)
	d.metrics.workersStart.Inc()
	d.log.Info("worker started", "run", rs.run.ID(), "worker", w.WID, "pid", w.PID(), "uid", rs.owner,
		"user", truncate(cred.User), "argv0", truncate(req.Argv[0]))
	d.publish(rs, api.Event{Type: api.EventWorkerStarted, Run: rs.run.ID(), Worker: w.WID, PID: w.PID()})
	d.kickStatus()
	// On the library's own waiter: no goroutine (and stack) per worker.
	w.AfterExit(func() { d.workerExited(rs, ws) })
	if !req.Ready.IsZero() {
		return d.awaitReady(ctx, rs, ws, req)
	}
	return view, nil
}

// awaitReady answers a start once the worker is ready. A worker that is not
// ready in time (its ready_timeout, else the request's bound) is killed with
// the members of its process group; its run stays.
func (d *Daemon) awaitReady(ctx context.Context, rs *runState, ws *workerState, req api.StartWorkerRequest) (api.Worker, *httpError) {
	rctx, cancel := context.WithTimeout(ctx, readyBound(req))
	defer cancel()
	info, err := ws.w.WaitReady(rctx)
	if err == nil {
		rs.mu.Lock()
		ws.ready = &info
		v := ws.viewLocked()
		rs.mu.Unlock()
		return v, nil
	}
	if rctx.Err() != nil && !errors.Is(err, jail.ErrNotReady) {
		err = fmt.Errorf("%w: not ready within %v (the request's bound; set ready_timeout)", jail.ErrNotReady, readyBound(req))
	}
	signalWorkerGroup(rs, ws, unix.SIGKILL)
	// Answer once the worker has exited (its pidfd says so), not once its
	// output is drained: a grandchild may hold the pipe until the run ends.
	waitExited(ws.w, 10*time.Second)
	if herr := specError(err); herr != nil {
		return api.Worker{}, herr
	}
	return api.Worker{}, errf(http.StatusInternalServerError, api.CodeInternal, "%v", err)
}

// workerExited records the worker's exit and announces it.
func (d *Daemon) workerExited(rs *runState, ws *workerState) {
	defer d.watchers.Done()
	defer rs.watchers.Done()
	st, _ := ws.w.Wait(context.Background())
	e := toExit(st)
	rs.mu.Lock()
	ws.exit = e
	ws.argv = boundArgv(ws.argv) // kept for the listing only
	rs.running--
	d.rememberExitLocked(rs)
	rs.mu.Unlock()
	d.releaseWorker(rs.owner)
	d.workers.Add(-1)
	d.metrics.workersExit.Inc()
	d.log.Info("worker exited", "run", rs.run.ID(), "worker", ws.w.WID, "pid", ws.w.PID(), "uid", rs.owner,
		"code", e.Code, "signal", e.SignalName)
	d.publish(rs, api.Event{Type: api.EventWorkerExited, Run: rs.run.ID(), Worker: ws.w.WID, PID: ws.w.PID(), Exit: e})
	d.kickStatus()
}

// rememberExitLocked counts a worker of rs that just exited, and forgets
// rs's oldest exited workers beyond its --max-workers and its UID's
// maxExitedPerUID. rs.mu is held.
func (d *Daemon) rememberExitLocked(rs *runState) {
	if rs.removed {
		return
	}
	over := d.exitedOver(rs.owner, 1)
	keep := min(d.maxWorkers, len(rs.workers)-rs.running-max(over, 0))
	d.exitedOver(rs.owner, -rs.pruneExitedLocked(keep))
}

// pruneExitedLocked forgets the oldest exited workers beyond keep, so a
// long-lived run whose pool restarts its workers does not grow without
// bound; their exit was announced as an event when it happened. It returns
// how many it forgot.
func (rs *runState) pruneExitedLocked(keep int) int {
	exited := len(rs.workers) - rs.running
	if exited <= keep {
		return 0
	}
	drop := exited - keep
	kept := rs.workers[:0]
	for _, ws := range rs.workers {
		if drop > 0 && ws.exit != nil {
			drop--
			continue
		}
		kept = append(kept, ws)
	}
	clear(rs.workers[len(kept):])
	rs.workers = kept
	return exited - keep - drop
}

// maxArgvKept bounds the bytes of an exited worker's argv kept for the
// listing (a start's body may carry up to 64 KiB of it).
const maxArgvKept = 1024

// boundArgv returns argv cut to about maxArgvKept bytes; a cut argument
// ends in "...".
func boundArgv(argv []string) []string {
	n := 0
	for i, a := range argv {
		if n+len(a) > maxArgvKept {
			out := append([]string(nil), argv[:i]...)
			if room := maxArgvKept - n; room > 0 {
				out = append(out, a[:room]+"...")
			} else {
				out = append(out, "...")
			}
			return out
		}
		n += len(a)
	}
	return argv
}

func (rs *runState) worker(wid int) *workerState {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, ws := range rs.workers {
		if ws.w.WID == wid {
			return ws
		}
	}
	return nil
}

// stopWorker sends SIGTERM to the worker and the members of its process
// group that are in the run cgroup, SIGKILL after grace, and returns once
// the worker has exited. Members that left the group (setsid) stay until
// the run is torn down.
func (d *Daemon) stopWorker(ctx context.Context, rs *runState, ws *workerState, grace time.Duration) api.Worker {
	for _, sig := range []syscall.Signal{unix.SIGTERM, unix.SIGKILL} {
		select {
		case <-ws.w.Done():
		default:
			signalWorkerGroup(rs, ws, sig)
			wait := grace
			if sig == unix.SIGKILL {
				wait = 10 * time.Second
			}
			t := time.NewTimer(wait)
			select {
			case <-ws.w.Done():
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	st, err := ws.w.Wait(ctx)
	rs.mu.Lock()
	v := ws.viewLocked()
	rs.mu.Unlock()
	if err == nil && v.Exit == nil {
		// Exited, but workerExited has not stored the status yet.
		v.State, v.Exit = api.WorkerExited, toExit(st)
	}
	return v
}

func signalWorkerGroup(rs *runState, ws *workerState, sig syscall.Signal) {
	_ = ws.w.Signal(sig)
	pids, err := rs.run.Cgroup().ProcsRecursive()
	if err != nil {
		return
	}
	leader := ws.w.PID()
	inGroup := func(pid int) bool {
		st, err := reaper.ReadStat(pid)
		return err == nil && st.PGID == leader
	}
	for _, pid := range pids {
		if pid != leader {
			// Pinned by a pidfd before it is checked: never a reused PID.
			rs.run.Cgroup().SignalPID(pid, sig, inGroup)
		}
	}
}

// teardownRun tears rs down once; concurrent callers wait for the first
// and get its result.
func (d *Daemon) teardownRun(ctx context.Context, rs *runState, grace time.Duration) api.Teardown {
	rs.tdOnce.Do(func() {
		rs.mu.Lock()
		rs.stopping = true
		rs.mu.Unlock()
		// The teardown must finish even if the client goes away.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout(grace))
		defer cancel()
		// A shutdown cuts the grace to its own (Teardown takes a done ctx
		// as "kill now"): a member's DELETE with a grace of minutes
		// would hold the daemon's stop past systemd's.
		gctx, gcancel := context.WithCancel(tctx)
		defer gcancel()
		defer context.AfterFunc(d.graceOver, gcancel)()
		rep, err := rs.run.Teardown(gctx, grace)
		td := api.Teardown{
			ID:            rs.run.ID(),
			Terminated:    rep.Terminated,
			Killed:        rep.Killed,
			KillMechanism: rep.KillMechanism,
			Escaped:       rep.Escaped,
			DurationMS:    float64(rep.Duration.Microseconds()) / 1000,
		}
		if err != nil {
			td.Error = err.Error()
			d.log.Warn("teardown", "run", rs.run.ID(), "uid", rs.owner, "err", err)
		}
		if rep.Escaped > 0 {
			d.log.Warn("teardown: workers had left the run cgroup; killed through their pidfds", "run", rs.run.ID(), "uid", rs.owner, "escaped", rep.Escaped)
		}
		rs.td = td
		// Every worker_exited of the run goes out before run_torn_down.
		// The workers are dead unless the teardown failed; then do not
		// wait past its deadline.
		wdone := make(chan struct{})
		go func() { rs.watchers.Wait(); close(wdone) }()
		select {
		case <-wdone:
		case <-tctx.Done():
			// A worker outside the run's cgroup (it moved itself) lives on.
			d.log.Warn("teardown: workers still running at its deadline", "run", rs.run.ID(), "uid", rs.owner, "after", teardownTimeout(grace))
		}
		d.mu.Lock()
		if d.runs[rs.run.ID()] == rs {
			delete(d.runs, rs.run.ID()) // createRun refuses its ID until then
		}
		d.mu.Unlock()
		rs.mu.Lock()
		rs.removed = true
		d.exitedOver(rs.owner, -(len(rs.workers) - rs.running))
		rs.mu.Unlock()
		d.releaseRun(rs.owner)
		d.metrics.tornDown(rs.run.Mechanism(), td)
		d.log.Info("run torn down", "run", td.ID, "uid", rs.owner, "terminated", td.Terminated, "killed", td.Killed,
			"kill_mechanism", td.KillMechanism, "escaped", td.Escaped, "duration_ms", td.DurationMS, "grace", grace)
		d.publish(rs, api.Event{Type: api.EventRunTornDown, Run: rs.run.ID(), Teardown: &td})
		d.kickStatus()
	})
	return rs.td
}

// gcStale removes the runs a previous instance left under our parent
// (owner dead: it was SIGKILLed, or the host rebooted) with the root
// package's GC, scoped to our parent. The /proc scan for marked processes
// is skipped: a daemon's start is no time to sweep other supervisors' POSIX
// runs host-wide.
func (d *Daemon) gcStale(ctx context.Context) (int, error) {
	rep, err := inventory.GC(ctx, inventory.GCOptions{
		Parents:     []string{d.parent},
		OnlyParents: true,
		NoScan:      true,
	})
	n := 0
	for _, it := range rep.Items {
		switch it.Action {
		case inventory.GCRemoved:
			if it.Kind == "cgroup" {
				n++
			}
			d.log.Info("gc: removed", "kind", it.Kind, "run", it.ID, "reason", it.Reason)
		case inventory.GCFailed:
			d.log.Warn("gc: failed", "kind", it.Kind, "run", it.ID, "err", it.Error)
		}
	}
	return n, err
}

// waitExited waits until w has exited, up to limit: on its pidfd when it
// has one, else until it is reaped.
func waitExited(w *snakepit.Worker, limit time.Duration) {
	if fd := w.PidFD(); fd >= 0 {
		reaper.PidfdExited(fd, limit)
		return
	}
	select {
	case <-w.Done():
	case <-time.After(limit):
	}
}

// limitEvent reports a limit event of a run owned by uid (an OOM kill,
// forks refused at pids.max): in the log, the metrics and the event
// stream. The watcher already spaces reports of one kind a second apart.
func (d *Daemon) limitEvent(uid int, e snakepit.Event) {
	d.metrics.limitEvents.WithLabelValues(string(e.Kind)).Add(float64(e.Count))
	d.log.Warn(e.String(), "run", e.RunID, "uid", uid, "event", string(e.Kind), "count", e.Count, "total", e.Total, "limit", e.Limit)
	ev := api.Event{Type: string(e.Kind), Time: e.Time.UTC(), Run: e.RunID, Count: e.Count, Total: e.Total, Limit: e.Limit, Message: e.String()}
	d.events.publish(ownedEvent{Event: ev, owner: uid})
}
