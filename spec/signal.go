package spec

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Signal is a signal named in a spec: JSON "SIGTERM"; Set also takes
// "TERM", "term" and numbers ("15"). The zero value means the default
// (SIGTERM for a stop signal).
type Signal syscall.Signal

// ParseSignal parses a signal name (SIGTERM, TERM) or number.
func ParseSignal(s string) (Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if !isSignal(n) {
			return 0, fmt.Errorf("%w: %d is not a signal number", ErrBadSignal, n)
		}
		return Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return Signal(n), nil
	}
	return 0, fmt.Errorf("%w: %q (want a name like TERM, SIGTERM, INT or a number)", ErrBadSignal, truncate(s))
}

// Validate refuses a value that is no signal (0 is "the default").
func (sig Signal) Validate() error {
	if sig != 0 && !isSignal(int(sig)) {
		return fmt.Errorf("%w: %d is not a signal number", ErrBadSignal, int(sig))
	}
	return nil
}

// isSignal reports whether n is a signal: a named one, or a real-time one
// (32 to 64 on Linux: SIGRTMIN+3 stops some inits), which have no names.
func isSignal(n int) bool {
	return n > 0 && (unix.SignalName(syscall.Signal(n)) != "" || n >= 32 && n <= 64)
}

// Set parses s into sig (the CLI's flag form).
func (sig *Signal) Set(s string) error {
	v, err := ParseSignal(s)
	if err != nil {
		return err
	}
	*sig = v
	return nil
}

// Or returns sig, or def when sig is zero.
func (sig Signal) Or(def syscall.Signal) syscall.Signal {
	if sig == 0 {
		return def
	}
	return syscall.Signal(sig)
}

// String is the signal's name ("SIGTERM"); "" for the zero value.
func (sig Signal) String() string {
	if sig == 0 {
		return ""
	}
	if n := unix.SignalName(syscall.Signal(sig)); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}

// MarshalText writes the signal's name.
func (sig Signal) MarshalText() ([]byte, error) { return []byte(sig.String()), nil }

// UnmarshalText parses a name or number. Only Run.StopSignal is a
// Signal, so the error names that field.
func (sig *Signal) UnmarshalText(b []byte) error {
	return fieldErr("stop_signal", "--stop-signal", sig.Set(string(b)))
}
