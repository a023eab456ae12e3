package sdnotify

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// notifySocket listens where NOTIFY_SOCKET points for the test.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", p)
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify datagram: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	c := notifySocket(t)
	if err := Ready("runs: 0\nworkers: 0"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "READY=1\nSTATUS=runs: 0 workers: 0" {
		t.Errorf("Ready sent %q", got)
	}
	if err := Status("x"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "STATUS=x" {
		t.Errorf("Status sent %q", got)
	}
	if err := Stopping("bye"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c); got != "STOPPING=1\nSTATUS=bye" {
		t.Errorf("Stopping sent %q", got)
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, %v", sent, err)
	}
	if Available() {
		t.Error("Available without NOTIFY_SOCKET")
	}
	t.Setenv("NOTIFY_SOCKET", "/run/no-such-manager/notify")
	if !Available() {
		t.Error("not Available with NOTIFY_SOCKET set")
	}
}

// TestNotifyDoesNotBlock: a manager that never reads must not wedge us.
func TestNotifyDoesNotBlock(t *testing.T) {
	notifySocket(t) // never read
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 10000 && err == nil; i++ {
			_, err = Notify("STATUS=" + strings.Repeat("x", 1000))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Log("the queue never filled (large max_dgram_qlen)")
		}
	case <-time.After(notifyTimeout + 20*time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
}

func TestWatchdog(t *testing.T) {
	c := notifySocket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { RunWatchdog(ctx, 20*time.Millisecond, func(context.Context) bool { return true }); close(done) }()
	for range 2 {
		if got := recv(t, c); got != "WATCHDOG=1" {
			t.Errorf("watchdog sent %q", got)
		}
	}
	cancel()
	<-done

	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	if iv, err := WatchdogInterval(); err != nil || iv != 30*time.Second {
		t.Errorf("WatchdogInterval = %v, %v", iv, err)
	}
}
