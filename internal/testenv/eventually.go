package testenv

import (
	"testing"
	"time"
)

// Eventually waits until cond holds, re-checking it every few milliseconds
// (backing off to 50 ms), and fails the test with what when timeout passes
// first. Tests wait on the very thing they assert through it, never on a
// fixed sleep; the timeout is a bound on failure, not a duration that
// success depends on.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(timeout, cond) {
		t.Fatalf("not within %v: %s", timeout, what)
	}
}

// Within is Eventually without a test: it reports whether cond held before
// timeout passed.
func Within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}
