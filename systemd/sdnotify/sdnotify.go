// Package sdnotify speaks the sd_notify(3) protocol (READY=1, STATUS=,
// STOPPING=1, WATCHDOG=1) to the service manager. It is kept apart from the
// systemd package so that programs which only notify do not link D-Bus.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// notifyTimeout bounds one sd_notify send. A datagram to a receiver whose
// queue is full blocks; a service manager that does not read must not
// wedge the daemon (at shutdown above all).
const notifyTimeout = 2 * time.Second

// Notify sends sd_notify(3) assignments ("READY=1", "STATUS=...") to the
// service manager in one datagram, giving up after notifyTimeout. Without
// NOTIFY_SOCKET (not started by systemd as Type=notify) it does nothing and
// reports false. go-systemd's SdNotify is not used: it writes without a
// deadline.
func Notify(assignments ...string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	// "@name" is an abstract socket; Go's net package maps it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(notifyTimeout))
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n"))); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}

// Available reports whether a service manager listens for notifications
// (NOTIFY_SOCKET is set): without one, a status line need not be made.
func Available() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// Ready tells the service manager that startup is complete, with a status
// line.
func Ready(status string) error {
	_, err := Notify(sddaemon.SdNotifyReady, "STATUS="+oneLine(status))
	return err
}

// Status updates the status line shown by systemctl status.
func Status(status string) error {
	_, err := Notify("STATUS=" + oneLine(status))
	return err
}

// Stopping tells the service manager that shutdown has begun.
func Stopping(status string) error {
	_, err := Notify(sddaemon.SdNotifyStopping, "STATUS="+oneLine(status))
	return err
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// WatchdogInterval returns the service's watchdog timeout (WatchdogSec=,
// passed as WATCHDOG_USEC for our PID), or 0 when there is none.
func WatchdogInterval() (time.Duration, error) {
	return sddaemon.SdWatchdogEnabled(false)
}

// RunWatchdog sends WATCHDOG=1 every interval/2 for as long as healthy
// reports true, until ctx ends. A healthy func that blocks or returns false
// withholds the ping, so systemd notices a wedged daemon. interval <= 0
// returns at once.
func RunWatchdog(ctx context.Context, interval time.Duration, healthy func(context.Context) bool) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		if healthy == nil || healthy(ctx) {
			_, _ = Notify(sddaemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
