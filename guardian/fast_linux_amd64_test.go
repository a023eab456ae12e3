//go:build linux && amd64

package guardian

import (
	"testing"
	"unsafe"
)

// TestFastGuardArgsLayout pins the offsets guardian_fast_linux_amd64.s
// uses: a field moved here without the .s following would make the
// guardian read garbage.
func TestFastGuardArgsLayout(t *testing.T) {
	var a fastGuardArgs
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"pipeFD", unsafe.Offsetof(a.pipeFD), 0},
		{"killFD", unsafe.Offsetof(a.killFD), 8},
		{"nullFD", unsafe.Offsetof(a.nullFD), 16},
		{"eventsFD", unsafe.Offsetof(a.eventsFD), 24},
		{"nRanges", unsafe.Offsetof(a.nRanges), 32},
		{"ranges", unsafe.Offsetof(a.ranges), 40},
		{"path", unsafe.Offsetof(a.path), 136},
		{"argv", unsafe.Offsetof(a.argv), 144},
		{"envp", unsafe.Offsetof(a.envp), 152},
		{"argvRemoved", unsafe.Offsetof(a.argvRemoved), 160},
		{"cgPath", unsafe.Offsetof(a.cgPath), 168},
		{"comm", unsafe.Offsetof(a.comm), 176},
		{"scratch", unsafe.Offsetof(a.scratch), 192},
		{"one", unsafe.Offsetof(a.one), 200},
		{"mask", unsafe.Offsetof(a.mask), 208},
		{"pollFD", unsafe.Offsetof(a.pollFD), 216},
		{"pollEvents", unsafe.Offsetof(a.pollEvents), 220},
		{"evbuf", unsafe.Offsetof(a.evbuf), 224},
	} {
		if c.got != c.want {
			t.Errorf("fastGuardArgs.%s at %d, the assembly reads it at %d", c.name, c.got, c.want)
		}
	}
	if n := len(a.ranges); n < 5 {
		t.Errorf("room for %d close_range calls; four kept fds leave up to 5 gaps", n)
	}
}
