package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
)

func init() {
	register(&command{
		name:    "version",
		summary: "print snakepit's version (module version, source revision, Go version); also -v, --version",
		define: func(fs *flagSet) action {
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("version: unexpected arguments")
				}
				_, err := fmt.Fprintln(stdout, versionString())
				return err
			}
		},
	})
}

// Stamped by test/setup.sh (-ldflags "-X main.version=0.1.0 -X
// main.revision=68160c8a1b2c-dirty"): with -buildvcs=false, or outside a
// checkout, the toolchain embeds no revision of its own.
var version, revision string

// versionString describes this binary from the build information the Go
// toolchain embeds: "snakepit (devel) rev 394a091e1f2c+dirty 2026-11-28T22:02:11Z go1.26.0".
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "snakepit (no build information)"
	}
	s := "snakepit " + bi.Main.Version
	if version != "" {
		s = "snakepit " + version
	}
	var rev, when, dirty string
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.time":
			when = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if revision != "" {
		// The stamp wins: it is what setup.sh and the .deb name, and the
		// toolchain's own stamp ("+dirty") may be absent or spelled apart.
		rev, dirty = revision, ""
	}
	if rev != "" {
		s += " rev " + rev + dirty
	}
	if when != "" {
		s += " " + when
	}
	return s + " " + bi.GoVersion
}
