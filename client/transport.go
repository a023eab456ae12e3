package client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// transport is the client's http.RoundTripper: HTTP/1.1 over the daemon's
// unix socket, with the request written and the response read in the
// caller's goroutine. net/http's Transport hands every request to a
// writer and a reader goroutine of the connection; on the machines we
// measured those hand-offs were a quarter of a local API call (GET
// /v1/status: 385-500 µs through http.Transport, 270-360 µs like this).
//
// Idle connections are kept (up to maxIdle) and checked before reuse: a
// connection the daemon closed (its idle timeout) is dropped, not written
// to. A GET that still fails on a reused connection is retried once on a
// fresh one; other methods are not retried (the daemon may have acted).
type transport struct {
	socket string

	mu   sync.Mutex
	idle []*conn
}

const maxIdle = 4

type conn struct {
	net.Conn
	br *bufio.Reader
}

func (t *transport) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", t.socket)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

// get returns an idle connection that is still open, or a new one.
func (t *transport) get(ctx context.Context) (c *conn, reused bool, err error) {
	t.mu.Lock()
	for len(t.idle) > 0 {
		c = t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if c.br.Buffered() == 0 && open(c.Conn) {
			t.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	c, err = t.dial(ctx)
	return c, false, err
}

func (t *transport) put(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.idle) >= maxIdle {
		c.Close()
		return
	}
	t.idle = append(t.idle, c)
}

// closeIdle closes every idle connection.
func (t *transport) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, reused, err := t.roundTrip(req)
	bodyless := req.Body == nil || req.Body == http.NoBody
	if err != nil && reused && bodyless && (req.Method == http.MethodGet || req.Method == http.MethodHead) && req.Context().Err() == nil {
		resp, _, err = t.roundTrip(req)
	}
	return resp, err
}

func (t *transport) roundTrip(req *http.Request) (*http.Response, bool, error) {
	ctx := req.Context()
	c, reused, err := t.get(ctx)
	if err != nil {
		// RoundTrip closes the body on every path (req.Write does below).
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, false, err
	}
	// ctx bounds the whole exchange, body included: once it ends, every
	// read and write on the connection fails at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		c.Close()
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return nil, reused, err
	}
	if err := req.Write(c); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &body{ReadCloser: resp.Body, t: t, c: c, stop: stop, keep: !resp.Close}
	return resp, reused, nil
}

// body returns its connection to the pool once read to EOF and closed;
// closed early, the connection is closed (unread response bytes would
// otherwise be taken for the next response, and an event stream has no
// end to read to).
type body struct {
	io.ReadCloser
	t    *transport
	c    *conn
	stop func() bool
	eof  atomic.Bool // set by Read, read by a Close that may run meanwhile
	keep bool
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

func (b *body) Close() error {
	b.once.Do(func() {
		ctxDone := !b.stop()
		if !b.eof.Load() || !b.keep || ctxDone {
			// Close the connection first: net/http's body Close drains
			// what is left, which for an event stream is forever.
			b.c.Close()
			_ = b.ReadCloser.Close()
			return
		}
		if b.ReadCloser.Close() != nil {
			b.c.Close()
			return
		}
		b.t.put(b.c)
	})
	return nil
}
