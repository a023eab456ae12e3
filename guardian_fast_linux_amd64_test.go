//go:build linux && amd64

package snakepit

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
		{"nRanges", unsafe.Offsetof(a.nRanges), 24},
		{"ranges", unsafe.Offsetof(a.ranges), 32},
		{"path", unsafe.Offsetof(a.path), 96},
		{"argv", unsafe.Offsetof(a.argv), 104},
		{"envp", unsafe.Offsetof(a.envp), 112},
		{"comm", unsafe.Offsetof(a.comm), 120},
		{"scratch", unsafe.Offsetof(a.scratch), 136},
		{"one", unsafe.Offsetof(a.one), 144},
		{"mask", unsafe.Offsetof(a.mask), 152},
	} {
		if c.got != c.want {
			t.Errorf("fastGuardArgs.%s at %d, the assembly reads it at %d", c.name, c.got, c.want)
		}
	}
	if n := len(a.ranges); n < 4 {
		t.Errorf("room for %d close_range calls; three kept fds leave up to 4 gaps", n)
	}
}
