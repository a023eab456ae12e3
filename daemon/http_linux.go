//go:build linux

package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/spec"
)

// Limits of the HTTP layer (docs/API.md lists them).
const (
	maxBody        = 64 << 10
	maxHeader      = 16 << 10
	maxConns       = 512              // open connections in all
	maxConnsPerUID = 128              // of any one UID but root
	rootConns      = 64               // of the maxConns, kept free for root
	readTimeout    = 10 * time.Second // headers and body
	idleTimeout    = 30 * time.Second // a kept-alive connection between requests
	requestTimeout = 30 * time.Second // everything but teardowns and streams
	responseSlack  = 10 * time.Second // a teardown's response outlives the teardown by this
	eventWriteWait = 10 * time.Second // a stream reader that stalls longer is dropped
)

// teardownTimeout bounds a teardown with grace: SIGTERM, grace, SIGKILL,
// the wait until empty and rmdir.
func teardownTimeout(grace time.Duration) time.Duration { return grace + 30*time.Second }

type peerKey struct{}

func peerFrom(ctx context.Context) peer {
	p, ok := ctx.Value(peerKey{}).(peer)
	if !ok {
		return peer{err: errors.New("no peer credentials")}
	}
	return p
}

func (d *Daemon) newServer() *http.Server {
	mux := http.NewServeMux()
	h := func(pattern string, min role, f func(http.ResponseWriter, *http.Request, peer)) {
		mux.Handle(pattern, d.guard(min, f))
	}
	h("POST "+api.PathRuns, roleUser, d.handleCreateRun)
	h("GET "+api.PathRuns, roleUser, d.handleListRuns)
	h("GET "+api.PathRuns+"/{id}", roleUser, d.handleGetRun)
	h("GET "+api.PathRuns+"/{id}/stats", roleUser, d.handleRunStats)
	h("DELETE "+api.PathRuns+"/{id}", roleUser, d.handleDeleteRun)
	h("POST "+api.PathRuns+"/{id}/workers", roleUser, d.handleStartWorker)
	h("DELETE "+api.PathRuns+"/{id}/workers/{wid}", roleUser, d.handleStopWorker)
	h("GET "+api.PathEvents, roleUser, d.handleEvents)
	h("GET "+api.PathStatus, roleUser, d.handleStatus)
	// Its own check: members of --metrics-group need not be API users.
	h("GET "+api.PathMetrics, roleNone, d.handleMetrics)
	// Known paths with another method: 405, as JSON. Anything else: 404.
	for _, p := range []string{api.PathRuns, api.PathRuns + "/{id}", api.PathRuns + "/{id}/stats", api.PathRuns + "/{id}/workers",
		api.PathRuns + "/{id}/workers/{wid}", api.PathEvents, api.PathStatus, api.PathMetrics} {
		h(p, roleNone, func(w http.ResponseWriter, r *http.Request, _ peer) {
			writeErr(w, errf(http.StatusMethodNotAllowed, api.CodeMethod, "method %s not allowed on %s", r.Method, r.URL.Path))
		})
	}
	h("/", roleNone, func(w http.ResponseWriter, r *http.Request, _ peer) {
		writeErr(w, errf(http.StatusNotFound, api.CodeNotFound, "no such endpoint: %s", r.URL.Path))
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeader,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*peerConn); ok {
				return context.WithValue(ctx, peerKey{}, pc.peer)
			}
			return ctx
		},
		ErrorLog: nil,
	}
}

// guard authorises the request (peer credentials), bounds it and turns
// panics into 500s.
func (d *Daemon) guard(min role, f func(http.ResponseWriter, *http.Request, peer)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				buf := make([]byte, 4096)
				buf = buf[:runtime.Stack(buf, false)]
				d.log.Error("panic in handler", "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(buf))
				writeErr(w, errf(http.StatusInternalServerError, api.CodeInternal, "internal error"))
			}
		}()
		p := peerFrom(r.Context())
		if min > roleNone && d.roleOf(p) < min {
			writeErr(w, errf(http.StatusForbidden, api.CodeForbidden, "uid %d may not use this daemon", p.uid))
			return
		}
		rc := http.NewResponseController(w)
		// Handlers that may legitimately take longer (teardowns, event
		// streams) move these deadlines themselves. The read deadline is
		// never cleared: the server's background read (which notices a
		// client going away) runs while the handler does, and after it
		// the server reads what is left of the body.
		now := time.Now()
		_ = rc.SetWriteDeadline(now.Add(requestTimeout))
		if r.ContentLength != 0 {
			// The body must be in within this; decode then moves it.
			_ = rc.SetReadDeadline(now.Add(readTimeout))
		} else {
			_ = rc.SetReadDeadline(now.Add(requestTimeout))
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		defer func() {
			if w.Header().Get("Connection") == "close" {
				// An error reply closes the connection: do not wait for
				// the rest of a body that may never come.
				_ = rc.SetReadDeadline(time.Now())
			}
		}()
		f(w, r, p)
	})
}

func (d *Daemon) roleOf(p peer) role {
	switch {
	case p.err != nil:
		return roleNone
	case p.uid == 0:
		return roleAdmin
	case p.inGroup(d.gid):
		return roleUser
	}
	return roleNone
}

// mayManage reports whether p may see and change rs.
func (d *Daemon) mayManage(p peer, rs *runState) bool {
	return d.roleOf(p) == roleAdmin || rs.owner == p.uid
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: err.Error(), Code: api.CodeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeErr replies with an error and closes the connection after it: a
// client that erred (or is hostile) starts afresh, and whatever it has not
// sent of its body is never waited for.
func writeErr(w http.ResponseWriter, e *httpError) {
	w.Header().Set("Connection", "close")
	writeJSON(w, e.status, api.Error{Error: e.err.Error(), Code: e.code})
}

// decode reads a JSON body within maxBody and hands it to parse (a strict
// decoder of package spec). An empty body decodes as {} when emptyOK.
func decode(w http.ResponseWriter, r *http.Request, parse func([]byte) error, emptyOK bool) *httpError {
	data, err := io.ReadAll(r.Body)
	// The body is in. Move the deadline past the handler's own bound: the
	// server's background read (which notices a client going away) would
	// otherwise cancel the request's context when it fires.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(requestTimeout + responseSlack))
	return decodeData(data, err, parse, emptyOK)
}

func decodeData(data []byte, err error, parse func([]byte) error, emptyOK bool) *httpError {
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errf(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body larger than %d bytes", maxBody)
		}
		return errf(http.StatusBadRequest, api.CodeBadRequest, "read body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if !emptyOK {
			return errf(http.StatusBadRequest, api.CodeInvalidJSON, "empty request body")
		}
		data = []byte("{}")
	}
	if err := parse(data); err != nil {
		if herr := specError(err); herr != nil {
			return herr
		}
		return errf(http.StatusBadRequest, api.CodeBadRequest, "%v", err)
	}
	return nil
}

func (d *Daemon) runFor(w http.ResponseWriter, r *http.Request, p peer) *runState {
	rs, herr := d.lookup(r.PathValue("id"))
	if herr != nil {
		writeErr(w, herr)
		return nil
	}
	if !d.mayManage(p, rs) {
		// The same answer as for a missing run: run IDs are no oracle.
		writeErr(w, errNoRun(rs.run.ID()))
		return nil
	}
	return rs
}

func (d *Daemon) handleCreateRun(w http.ResponseWriter, r *http.Request, p peer) {
	var req api.CreateRunRequest
	if herr := decode(w, r, func(b []byte) (err error) { req, err = spec.DecodeRun(b); return err }, true); herr != nil {
		writeErr(w, herr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rs, herr := d.createRun(ctx, p.uid, req)
	if herr != nil {
		writeErr(w, herr)
		return
	}
	writeJSON(w, http.StatusCreated, rs.view())
}

func (d *Daemon) handleListRuns(w http.ResponseWriter, r *http.Request, p peer) {
	admin := d.roleOf(p) == roleAdmin
	d.mu.Lock()
	list := make([]*runState, 0, len(d.runs))
	for _, rs := range d.runs {
		if admin || rs.owner == p.uid {
			list = append(list, rs)
		}
	}
	d.mu.Unlock()
	out := make([]api.Run, 0, len(list))
	for _, rs := range list {
		out = append(out, rs.view())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetRun(w http.ResponseWriter, r *http.Request, p peer) {
	if rs := d.runFor(w, r, p); rs != nil {
		writeJSON(w, http.StatusOK, rs.view())
	}
}

// graceParam parses ?grace= (a Go duration, or plain seconds); def when
// absent.
func (d *Daemon) graceParam(r *http.Request, def time.Duration) (time.Duration, *httpError) {
	v := r.URL.Query().Get("grace")
	if v == "" {
		return def, nil
	}
	outOfRange := func() *httpError {
		return errf(http.StatusBadRequest, api.CodeBadRequest, "grace %q: must be between 0 and %v", truncate(v), d.maxGrace)
	}
	g, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			// Not a duration, or one that overflows: time says the same.
			return 0, errf(http.StatusBadRequest, api.CodeBadRequest, "grace %q: want a duration like 2s, between 0 and %v", truncate(v), d.maxGrace)
		}
		// Compared in seconds first: a huge float would wrap around in
		// the conversion (NaN compares false both ways).
		if !(secs >= 0 && secs <= d.maxGrace.Seconds()) {
			return 0, outOfRange()
		}
		g = time.Duration(secs * float64(time.Second))
	}
	if g < 0 || g > d.maxGrace {
		return 0, outOfRange()
	}
	return g, nil
}

func (d *Daemon) handleDeleteRun(w http.ResponseWriter, r *http.Request, p peer) {
	rs := d.runFor(w, r, p)
	if rs == nil {
		return
	}
	grace, herr := d.graceParam(r, rs.grace)
	if herr != nil {
		writeErr(w, herr)
		return
	}
	// The response outlives the teardown, whose own bound is shorter.
	extendDeadlines(w, teardownTimeout(grace)+responseSlack)
	writeJSON(w, http.StatusOK, d.teardownRun(r.Context(), rs, grace))
}

func (d *Daemon) handleStartWorker(w http.ResponseWriter, r *http.Request, p peer) {
	rs := d.runFor(w, r, p)
	if rs == nil {
		return
	}
	var req api.StartWorkerRequest
	if herr := decode(w, r, func(b []byte) (err error) { req, err = spec.DecodeWorker(b); return err }, false); herr != nil {
		writeErr(w, herr)
		return
	}
	// The start's own bound (startTimeout) and then the kill fit in; a
	// worker with readiness is answered once it is ready, so its request
	// lives as long as that wait too (bounded: readyBound).
	timeout := startTimeout + requestTimeout
	if !req.Ready.IsZero() {
		timeout += readyBound(req)
	}
	extendDeadlines(w, timeout)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	wv, herr := d.startWorker(ctx, p, rs, req)
	if herr != nil {
		writeErr(w, herr)
		return
	}
	writeJSON(w, http.StatusCreated, wv)
}

func (d *Daemon) handleStopWorker(w http.ResponseWriter, r *http.Request, p peer) {
	rs := d.runFor(w, r, p)
	if rs == nil {
		return
	}
	wid, err := strconv.Atoi(r.PathValue("wid"))
	if err != nil || wid <= 0 {
		writeErr(w, errf(http.StatusBadRequest, api.CodeBadRequest, "worker ID %q: want a positive integer", truncate(r.PathValue("wid"))))
		return
	}
	ws := rs.worker(wid)
	if ws == nil {
		writeErr(w, errf(http.StatusNotFound, api.CodeNotFound, "run %s has no worker %d", rs.run.ID(), wid))
		return
	}
	grace, herr := d.graceParam(r, rs.grace)
	if herr != nil {
		writeErr(w, herr)
		return
	}
	extendDeadlines(w, grace+requestTimeout+responseSlack)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), grace+requestTimeout)
	defer cancel()
	writeJSON(w, http.StatusOK, d.stopWorker(ctx, rs, ws, grace))
}

func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request, p peer) {
	uid := -1
	if d.roleOf(p) != roleAdmin {
		uid = p.uid
	}
	s := d.events.subscribe(uid)
	defer d.events.unsubscribe(s)
	rc := http.NewResponseController(w)
	// A stream lasts until either end ends it; its connection counts
	// against its UID's share meanwhile.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case ev, ok := <-s.c:
			if !ok {
				if s.overflow {
					_ = rc.SetWriteDeadline(time.Now().Add(eventWriteWait))
					_ = enc.Encode(api.Event{Type: api.EventOverflow, Time: time.Now().UTC()})
					_ = rc.Flush()
				}
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(eventWriteWait))
			if enc.Encode(ev) != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request, p peer) {
	writeJSON(w, http.StatusOK, d.status())
}

func (d *Daemon) status() api.Status {
	d.mu.Lock()
	runs := len(d.runs)
	d.mu.Unlock()
	return api.Status{
		PID:              os.Getpid(),
		Runs:             runs,
		Workers:          int(d.workers.Load()),
		StaleRunsRemoved: d.gcRemoved,
		RunParent:        d.parent,
		Mode:             d.mode,
		Goroutines:       runtime.NumGoroutine(),
		OpenFDs:          d.fds.get(),
		RSSBytes:         rssBytes(),
		Guardian:         d.guardian.PID,
		EventStreams:     d.events.count(),
	}
}

// extendDeadlines gives a long handler (teardowns) d from now to read
// (the background read) and to write its response.
func extendDeadlines(w http.ResponseWriter, d time.Duration) {
	rc := http.NewResponseController(w)
	t := time.Now().Add(d)
	_ = rc.SetWriteDeadline(t)
	_ = rc.SetReadDeadline(t)
}

func errNoRun(id string) *httpError {
	return errf(http.StatusNotFound, api.CodeNotFound, "no such run: %s", id)
}

// fdCount is the daemon's open descriptor count for GET /v1/status.
// Counting reads all of /proc/self/fd, O(runs); a status request gets the
// last count at once and starts a recount when it is older than a second.
type fdCount struct {
	mu    sync.Mutex
	n     int
	at    time.Time
	count bool // a recount is under way
}

func (c *fdCount) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		c.n, c.at = countFDs(), time.Now()
		return c.n
	}
	if !c.count && time.Since(c.at) > time.Second {
		c.count = true
		go func() {
			n := countFDs()
			c.mu.Lock()
			c.n, c.at, c.count = n, time.Now(), false
			c.mu.Unlock()
		}()
	}
	return c.n
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory's own fd
}

func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}
