package systemd

import (
	"strings"
	"testing"
	"time"
)

// TestUnit checks the settings the daemon relies on, and that the
// timeouts nest: the daemon's --grace < TimeoutStopSec (with room for the
// kill and cleanup after the grace).
func TestUnit(t *testing.T) {
	for key, want := range map[string]string{
		"Type":          "notify",
		"NotifyAccess":  "main",
		"Delegate":      "yes",
		"KillMode":      "control-group",
		"ProtectSystem": "full",
	} {
		if got, ok := UnitSetting(Unit, key); !ok || got != want {
			t.Errorf("%s = %q (set %v), want %q", key, got, ok, want)
		}
	}
	for _, forbidden := range []string{"ProtectControlGroups", "PrivateTmp", "ProtectHome", "RuntimeDirectory"} {
		if v, ok := UnitSetting(Unit, forbidden); ok && v != "no" {
			t.Errorf("%s=%s must not be set (see the comments in the unit)", forbidden, v)
		}
	}
	exec, _ := UnitSetting(Unit, "ExecStart")
	f := strings.Fields(exec)
	var grace time.Duration
	for i, a := range f {
		if a == "--grace" && i+1 < len(f) {
			grace, _ = time.ParseDuration(f[i+1])
		}
	}
	if grace <= 0 {
		t.Fatalf("ExecStart %q has no --grace", exec)
	}
	stop, _ := UnitSetting(Unit, "TimeoutStopSec")
	ts, err := time.ParseDuration(stop)
	if err != nil {
		t.Fatalf("TimeoutStopSec %q: %v", stop, err)
	}
	if ts < grace+10*time.Second {
		t.Errorf("TimeoutStopSec %v must exceed the daemon's grace %v by the time a kill and cleanup take (10s)", ts, grace)
	}
	wd, _ := UnitSetting(Unit, "WatchdogSec")
	if w, err := time.ParseDuration(wd); err == nil && w < 10*time.Second {
		t.Errorf("WatchdogSec %v is too tight for a loaded host", w)
	}
}

func TestUnitSetting(t *testing.T) {
	u := "[Unit]\n# Type=simple\nType = notify\n[Service]\nX=1\nX=2\n"
	if v, ok := UnitSetting(u, "Type"); !ok || v != "notify" {
		t.Errorf("Type = %q %v", v, ok)
	}
	if v, _ := UnitSetting(u, "X"); v != "2" {
		t.Errorf("X = %q, want the last value", v)
	}
	if _, ok := UnitSetting(u, "Y"); ok {
		t.Errorf("Y found")
	}
}
