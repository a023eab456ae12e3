package systemd

import (
	_ "embed"
	"strings"
)

// Unit is the systemd unit file of the snakepit daemon
// (systemd/snakepit.service), printed by `snakepit daemon --print-unit`.
//
//go:embed snakepit.service
var Unit string

// UnitName is the name the unit is installed under.
const UnitName = "snakepit.service"

// UnitSetting returns the last value of key (e.g. "TimeoutStopSec") in the
// unit file, and whether it is set. Comments and section headers are
// skipped; sections are not distinguished (the unit has no duplicate keys
// across sections).
func UnitSetting(unit, key string) (string, bool) {
	val, found := "", false
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.TrimSpace(k) == key {
			val, found = strings.TrimSpace(v), true
		}
	}
	return val, found
}
