package jail

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
)

// A line longer than maxReadyLine never matches: its prefix might where
// the whole line does not ('^a+$' against a's followed by NOTREADY).
func TestReadyLineTooLongNeverMatches(t *testing.T) {
	watch := func(out string) bool {
		rs := &Ready{re: regexp.MustCompile(`^a+$`), ready: make(chan struct{})}
		l := &lineWatcher{dst: io.Discard, rs: rs}
		// In pieces, as a pipe delivers it.
		for b := []byte(out); len(b) > 0; b = b[min(len(b), 4096):] {
			if _, err := l.Write(b[:min(len(b), 4096)]); err != nil {
				t.Fatal(err)
			}
		}
		return rs.gotLine
	}
	long := strings.Repeat("a", maxReadyLine+10) + "NOTREADY\n"
	if watch(long) {
		t.Error("a long line matched by its prefix")
	}
	if !watch(long + "aaa\n") {
		t.Error("the short line after a long one did not match")
	}
	if !watch(strings.Repeat("a", maxReadyLine) + "\n") {
		t.Error("a line of exactly maxReadyLine did not match")
	}
	var dst bytes.Buffer
	l := &lineWatcher{dst: &dst, rs: &Ready{re: regexp.MustCompile(`x`), ready: make(chan struct{})}}
	if _, err := l.Write([]byte(long)); err != nil || dst.String() != long {
		t.Errorf("output not passed through unchanged: %v", err)
	}
}
