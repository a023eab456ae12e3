package systemd

import (
	"errors"
	"math"
	"testing"
)

func TestParseProperty(t *testing.T) {
	for _, c := range []struct {
		in   string
		name string
		val  any
	}{
		{"MemoryMax=64M", "MemoryMax", uint64(64 << 20)},
		{"MemoryHigh=infinity", "MemoryHigh", uint64(math.MaxUint64)},
		{"TasksMax=100", "TasksMax", uint64(100)},
		{"CPUQuota=150%", "CPUQuotaPerSecUSec", uint64(1500000)},
		{"MemoryAccounting=yes", "MemoryAccounting", true},
		{"TimeoutStopSec=90", "TimeoutStopUSec", uint64(90000000)},
		{"TimeoutStopSec=1.5s", "TimeoutStopUSec", uint64(1500000)},
		{"Description=a b=c", "Description", "a b=c"},
	} {
		p, err := ParseProperty(c.in)
		if err != nil || p.Name != c.name || p.Value != c.val {
			t.Errorf("ParseProperty(%q) = %v %#v, %v; want %s %#v", c.in, p.Name, p.Value, err, c.name, c.val)
		}
	}
	for _, in := range []string{"", "MemoryMax", "=1", "MemoryMax=lots", "CPUQuota=150", "Bogus=1", "TasksMax=-1", "MemoryAccounting=maybe"} {
		if _, err := ParseProperty(in); !errors.Is(err, ErrBadProperty) {
			t.Errorf("ParseProperty(%q): %v, want ErrBadProperty", in, err)
		}
	}
}

func TestUnitOf(t *testing.T) {
	for _, c := range []struct{ in, unit, slice string }{
		{"/system.slice/foo.service", "foo.service", "system.slice"},
		{"/system.slice/foo.service/supervisor", "foo.service", "system.slice"},
		{"/system.slice/foo.service/x.scope", "foo.service", "system.slice"},
		{"/user.slice/user-1000.slice/session-3.scope", "session-3.scope", "user-1000.slice"},
		{"/a.slice/a-b.slice/run-u7.scope", "run-u7.scope", "a-b.slice"},
		{"/init.scope", "init.scope", ""},
		{"/system.slice", "", "system.slice"},
		{"/", "", ""},
	} {
		if u, s := UnitOf(c.in); u != c.unit || s != c.slice {
			t.Errorf("UnitOf(%q) = %q, %q; want %q, %q", c.in, u, s, c.unit, c.slice)
		}
	}
}
