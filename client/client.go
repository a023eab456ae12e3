// Package client talks to the snakepit daemon's local API (package api) over
// its unix socket.
//
//	c := client.New("") // $SNAKEPIT_SOCKET or /run/snakepit/snakepit.sock
//	run, err := c.CreateRun(ctx, api.CreateRunRequest{})
//	w, err := c.StartWorker(ctx, run.ID, api.StartWorkerRequest{Argv: []string{"sleep", "60"}})
//	td, err := c.DeleteRun(ctx, run.ID, 2*time.Second)
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snakepit/snakepit/api"
)

// Sentinel errors; an *APIError unwraps to the one matching its status.
var (
	// ErrNoDaemon means nothing listens on the socket (missing, or
	// connection refused).
	ErrNoDaemon   = errors.New("snakepit daemon not running")
	ErrBadRequest = errors.New("bad request")
	// ErrForbidden (403) is a permission error: errors.Is(err,
	// fs.ErrPermission) holds for it too.
	ErrForbidden   = fmt.Errorf("forbidden: %w", fs.ErrPermission)
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrUnavailable = errors.New("daemon unavailable")
	ErrServer      = errors.New("daemon error")
)

// APIError is an error response of the daemon.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code and Message are the body's code and error.
	Code, Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("snakepit daemon: %s (%d %s)", e.Message, e.Status, e.Code)
}

// Unwrap maps the status to a sentinel error.
func (e *APIError) Unwrap() error {
	switch {
	case e.Status == http.StatusNotFound:
		return ErrNotFound
	case e.Status == http.StatusForbidden:
		return ErrForbidden
	case e.Status == http.StatusConflict:
		return ErrConflict
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests:
		return ErrUnavailable
	case e.Status >= 400 && e.Status < 500:
		return ErrBadRequest
	}
	return ErrServer
}

// SocketPath returns $SNAKEPIT_SOCKET, or api.DefaultSocket.
func SocketPath() string {
	if p := os.Getenv(api.SocketEnv); p != "" {
		return p
	}
	return api.DefaultSocket
}

// Available reports whether a socket file exists at path ("" means
// SocketPath()). It does not connect.
func Available(path string) bool {
	if path == "" {
		path = SocketPath()
	}
	st, err := os.Stat(path)
	return err == nil && st.Mode()&fs.ModeSocket != 0
}

// Client is an API client. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
	tr     *transport
}

// New returns a client for the daemon listening on socket ("" means
// SocketPath()).
func New(socket string) *Client {
	if socket == "" {
		socket = SocketPath()
	}
	tr := &transport{socket: socket}
	return &Client{socket: socket, tr: tr, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client uses.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.tr.closeIdle() }

func (c *Client) do(ctx context.Context, method, path string, body, out any, want int) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	// Read to EOF (the newline after the JSON value): a body closed
	// before EOF makes the transport close the connection rather than
	// reuse it, and every request would pay a connect and the daemon's
	// SO_PEERCRED.
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://snakepit"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %s: %w", ErrNoDaemon, c.socket, err)
		}
		return nil, err
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode}
	var body api.Error
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &body) == nil && body.Error != "" {
		e.Code, e.Message = body.Code, body.Error
	} else {
		e.Message = string(bytes.TrimSpace(data))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

func runPath(id string) string { return api.PathRuns + "/" + url.PathEscape(id) }

func graceQuery(grace time.Duration) string {
	if grace < 0 {
		return ""
	}
	return "?grace=" + url.QueryEscape(grace.String())
}

// CreateRun creates a run.
func (c *Client) CreateRun(ctx context.Context, req api.CreateRunRequest) (api.Run, error) {
	var r api.Run
	err := c.do(ctx, http.MethodPost, api.PathRuns, req, &r, http.StatusCreated)
	return r, err
}

// ListRuns lists the runs visible to us (all for root, our own otherwise).
func (c *Client) ListRuns(ctx context.Context) ([]api.Run, error) {
	var rs []api.Run
	err := c.do(ctx, http.MethodGet, api.PathRuns, nil, &rs, http.StatusOK)
	return rs, err
}

// GetRun returns one run.
func (c *Client) GetRun(ctx context.Context, id string) (api.Run, error) {
	var r api.Run
	err := c.do(ctx, http.MethodGet, runPath(id), nil, &r, http.StatusOK)
	return r, err
}

// RunStats returns the usage counters of run id: the same stats object
// as `snakepit ps --json` (a field is absent where the host lacks it).
func (c *Client) RunStats(ctx context.Context, id string) (api.RunStats, error) {
	var m api.RunStats
	err := c.do(ctx, http.MethodGet, runPath(id)+"/stats", nil, &m, http.StatusOK)
	return m, err
}

// StartWorker starts a worker in run id.
func (c *Client) StartWorker(ctx context.Context, id string, req api.StartWorkerRequest) (api.Worker, error) {
	var w api.Worker
	err := c.do(ctx, http.MethodPost, runPath(id)+"/workers", req, &w, http.StatusCreated)
	return w, err
}

// StopWorker stops worker wid of run id: SIGTERM to the worker and the
// members of its process group, SIGKILL after grace (negative: the daemon's
// default). It returns the worker once it has exited.
func (c *Client) StopWorker(ctx context.Context, id string, wid int, grace time.Duration) (api.Worker, error) {
	var w api.Worker
	err := c.do(ctx, http.MethodDelete, runPath(id)+"/workers/"+strconv.Itoa(wid)+graceQuery(grace), nil, &w, http.StatusOK)
	return w, err
}

// DeleteRun tears run id down: SIGTERM to everything in it, SIGKILL
// (cgroup.kill) after grace (negative: the daemon's default), remove its
// cgroup.
func (c *Client) DeleteRun(ctx context.Context, id string, grace time.Duration) (api.Teardown, error) {
	var t api.Teardown
	err := c.do(ctx, http.MethodDelete, runPath(id)+graceQuery(grace), nil, &t, http.StatusOK)
	return t, err
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.do(ctx, http.MethodGet, api.PathStatus, nil, &s, http.StatusOK)
	return s, err
}

// EventStream is an open GET /v1/events.
type EventStream struct {
	ctx    context.Context
	resp   *http.Response
	sc     *bufio.Scanner
	closed atomic.Bool
}

// Events opens the event stream. It ends when ctx ends, Close is called or
// the daemon closes it.
func (c *Client) Events(ctx context.Context) (*EventStream, error) {
	resp, err := c.send(ctx, http.MethodGet, api.PathEvents, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	return &EventStream{ctx: ctx, resp: resp, sc: sc}, nil
}

// Next returns the next event; io.EOF when the stream ended, its ctx
// ended or Close was called (the read's own error then, an i/o timeout or
// a closed body, says nothing more).
func (s *EventStream) Next() (api.Event, error) {
	var ev api.Event
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil && s.ctx.Err() == nil && !s.closed.Load() {
			return ev, err
		}
		return ev, io.EOF
	}
	if err := json.Unmarshal(s.sc.Bytes(), &ev); err != nil {
		return ev, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

// Close ends the stream.
func (s *EventStream) Close() error {
	s.closed.Store(true)
	return s.resp.Body.Close()
}
