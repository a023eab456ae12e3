//go:build linux

package guardian

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/snakepit/snakepit/record"
)

// The command line Args builds is the one ParseArgs reads back.
func TestArgsRoundTrip(t *testing.T) {
	o := Options{Owner: record.Owner{PID: 42, Start: 7, BootID: "b"}, Grace: 3 * time.Second, Parents: []string{"/a", "/b"}}
	args := o.Args()
	if args[0] != Command {
		t.Fatalf("args %q", args)
	}
	got, serve, err := ParseArgs(args[1:])
	if err != nil || serve || !reflect.DeepEqual(got, o) {
		t.Fatalf("ParseArgs(%q) = %+v, %v, %v; want %+v", args, got, serve, err, o)
	}
	if _, serve, err := ParseArgs(ServiceArgs()[1:]); err != nil || !serve {
		t.Fatalf("service args: %v, %v", serve, err)
	}
	for _, bad := range [][]string{{}, {"--owner-pid", "1"}, {"--bogus"}, {"--serve", "extra"}} {
		if _, _, err := ParseArgs(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseArgs(%q) = %v, want ErrUsage", bad, err)
		}
	}
}

// FindBinary never falls back to the caller's own program.
func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "snakepit")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BinaryEnv, "")
	t.Setenv("PATH", t.TempDir())
	if _, err := FindBinary(""); !errors.Is(err, ErrNoBinary) {
		t.Fatalf("no binary anywhere: %v", err)
	}
	if got, err := FindBinary(bin); err != nil || got != bin {
		t.Fatalf("explicit: %q, %v", got, err)
	}
	t.Setenv(BinaryEnv, bin)
	if got, err := FindBinary(""); err != nil || got != bin {
		t.Fatalf("$%s: %q, %v", BinaryEnv, got, err)
	}
	t.Setenv(BinaryEnv, "")
	t.Setenv("PATH", dir)
	if got, err := FindBinary(""); err != nil || got != bin {
		t.Fatalf("PATH: %q, %v", got, err)
	}
}
