package systemd

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadProperty means a NAME=VALUE unit property could not be parsed or
// is not one we know how to send.
var ErrBadProperty = errors.New("systemd: bad unit property")

// Property is a unit property as sent to systemd over D-Bus: its D-Bus
// name and a value of the D-Bus type systemd expects.
type Property struct {
	Name  string
	Value any
}

// propKinds maps the unit-file names that ParseProperty accepts to how
// their value is parsed. systemd-run knows every setting through a large
// table in C; these are the resource-control and unit settings a run's
// scope is given in practice. An unknown name is an error, never sent as
// a guess.
var propKinds = map[string]propKind{
	"Description":              kindString,
	"CollectMode":              kindString,
	"MemoryMin":                kindBytes,
	"MemoryLow":                kindBytes,
	"MemoryHigh":               kindBytes,
	"MemoryMax":                kindBytes,
	"MemorySwapMax":            kindBytes,
	"TasksMax":                 kindCount,
	"CPUWeight":                kindCount,
	"StartupCPUWeight":         kindCount,
	"IOWeight":                 kindCount,
	"CPUQuota":                 kindPercentPerSec,
	"MemoryAccounting":         kindBool,
	"TasksAccounting":          kindBool,
	"CPUAccounting":            kindBool,
	"IOAccounting":             kindBool,
	"IPAccounting":             kindBool,
	"SendSIGKILL":              kindBool,
	"KillMode":                 kindString,
	"TimeoutStopSec":           kindDuration,
	"RuntimeMaxSec":            kindDuration,
	"AllowedCPUs":              kindString,
	"OOMPolicy":                kindString,
	"ManagedOOMMemoryPressure": kindString,
}

type propKind int

const (
	kindString propKind = iota
	kindBytes
	kindCount
	kindPercentPerSec
	kindBool
	kindDuration
)

// PropertyNames lists the names ParseProperty accepts, sorted.
func PropertyNames() []string {
	var out []string
	for k := range propKinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseProperty parses "NAME=VALUE" as systemd-run's --property does for
// the settings in PropertyNames: sizes with K/M/G/T (1024-based) or
// "infinity", counts or "infinity", CPUQuota as a percentage, booleans
// as yes/no/true/false/1/0, durations as Go durations or plain seconds.
func ParseProperty(s string) (Property, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Property{}, fmt.Errorf("%w: %q: want NAME=VALUE", ErrBadProperty, s)
	}
	kind, known := propKinds[name]
	if !known {
		return Property{}, fmt.Errorf("%w: %q: not a property snakepit passes on (known: %s)", ErrBadProperty, name, strings.Join(PropertyNames(), ", "))
	}
	bad := func(want string) (Property, error) {
		return Property{}, fmt.Errorf("%w: %s=%q: want %s", ErrBadProperty, name, val, want)
	}
	switch kind {
	case kindString:
		return Property{name, val}, nil
	case kindBytes:
		n, err := parseBytes(val)
		if err != nil {
			return bad("a size (64M, 1G, infinity)")
		}
		return Property{name, n}, nil
	case kindCount:
		if val == "infinity" {
			return Property{name, uint64(math.MaxUint64)}, nil
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			return bad("a number or infinity")
		}
		return Property{name, n}, nil
	case kindPercentPerSec:
		p, ok := strings.CutSuffix(val, "%")
		f, err := strconv.ParseFloat(p, 64)
		if !ok || err != nil || f <= 0 {
			return bad("a percentage (150%)")
		}
		// CPUQuota=150% is CPUQuotaPerSecUSec=1.5 s of CPU per second.
		return Property{"CPUQuotaPerSecUSec", uint64(f * 10000)}, nil
	case kindBool:
		switch strings.ToLower(val) {
		case "yes", "true", "on", "1":
			return Property{name, true}, nil
		case "no", "false", "off", "0":
			return Property{name, false}, nil
		}
		return bad("yes or no")
	case kindDuration:
		d, err := time.ParseDuration(val)
		if err != nil {
			secs, serr := strconv.ParseUint(val, 10, 32)
			if serr != nil {
				return bad("a duration (90s, 2m)")
			}
			d = time.Duration(secs) * time.Second
		}
		if d < 0 {
			return bad("a duration (90s, 2m)")
		}
		// TimeoutStopSec= is the D-Bus property TimeoutStopUSec.
		return Property{strings.TrimSuffix(name, "Sec") + "USec", uint64(d / time.Microsecond)}, nil
	}
	return bad("a value")
}

func parseBytes(v string) (uint64, error) {
	if v == "infinity" {
		return math.MaxUint64, nil
	}
	mult := uint64(1)
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult != 1 {
			v = v[:n-1]
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f*float64(mult) >= math.MaxUint64 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return uint64(f * float64(mult)), nil
}

// UnitOf splits the cgroup path of a process (relative to the cgroup2
// root, as in /proc/PID/cgroup) into the unit it belongs to and the slice
// that unit is in: "/system.slice/foo.service/supervisor" gives
// "foo.service", "system.slice". The unit is the first .service or .scope
// component: below it, names are its delegatee's (slices hold units,
// units hold no units). unit
// is empty when the path is in no service or scope (a slice itself, or
// the root); slice is empty outside every slice ("-.slice").
func UnitOf(cgroupPath string) (unit, slice string) {
	parts := strings.Split(strings.Trim(path.Clean(cgroupPath), "/"), "/")
	for _, p := range parts {
		switch {
		case strings.HasSuffix(p, ".slice") && unit == "":
			slice = p
		case strings.HasSuffix(p, ".service") || strings.HasSuffix(p, ".scope"):
			if unit == "" {
				unit = p
			}
		}
	}
	return unit, slice
}
