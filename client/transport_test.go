package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/internal/testenv"
)

// testServer serves h on a unix socket in a temp dir and counts accepted
// connections.
func testServer(t *testing.T, h http.Handler, idle time.Duration) (socket string, accepts *atomic.Int64, srv *http.Server) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	accepts = new(atomic.Int64)
	srv = &http.Server{Handler: h, IdleTimeout: idle, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepts.Add(1)
		}
	}}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return socket, accepts, srv
}

func statusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"pid":1}` + "\n"))
	})
	mux.HandleFunc("GET "+api.PathEvents, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a stream that never ends by itself
	})
	return mux
}

// TestTransportReusesConnection: sequential calls share one connection.
func TestTransportReusesConnection(t *testing.T) {
	socket, accepts, _ := testServer(t, statusHandler(), time.Minute)
	c := New(socket)
	defer c.Close()
	for i := 0; i < 20; i++ {
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d connections for 20 sequential calls, want 1", n)
	}
}

// TestTransportDropsClosedIdle: a connection the server closed while idle
// is not used again; the next call dials a fresh one and succeeds.
func TestTransportDropsClosedIdle(t *testing.T) {
	socket, accepts, _ := testServer(t, statusHandler(), 50*time.Millisecond)
	c := New(socket)
	defer c.Close()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The server's idle timeout closes it.
	testenv.Eventually(t, 5*time.Second, "the server closes the idle connection", func() bool {
		c.tr.mu.Lock()
		defer c.tr.mu.Unlock()
		return len(c.tr.idle) == 1 && !open(c.tr.idle[0].Conn)
	})
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("call after the server closed the idle connection: %v", err)
	}
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestTransportStreamCloseAndCancel: closing an endless stream returns at
// once and does not pool its connection; a cancelled context ends a call.
func TestTransportStreamCloseAndCancel(t *testing.T) {
	socket, _, _ := testServer(t, statusHandler(), time.Minute)
	c := New(socket)
	defer c.Close()
	ev, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = ev.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("EventStream.Close blocked")
	}
	c.tr.mu.Lock()
	idle := len(c.tr.idle)
	c.tr.mu.Unlock()
	if idle != 0 {
		t.Errorf("a closed stream's connection went back to the pool")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	ev2, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ev2.Close()
	t0 := time.Now()
	if _, err := ev2.Next(); err == nil {
		t.Fatal("Next returned an event from an empty stream")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Next returned %v after the context ended", d)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("ctx: %v", ctx.Err())
	}
}
