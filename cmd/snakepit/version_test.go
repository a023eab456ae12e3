package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

// version and --version print one line naming the binary and its Go.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%v: %v (%s)", args, err, errb.String())
		}
		line := strings.TrimSpace(out.String())
		if !strings.HasPrefix(line, "snakepit ") || !strings.HasSuffix(line, runtime.Version()) || strings.Contains(line, "\n") {
			t.Errorf("%v printed %q", args, out.String())
		}
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"version", "extra"}, &out, &errb); err == nil {
		t.Error("version with an argument: no error")
	}
}
