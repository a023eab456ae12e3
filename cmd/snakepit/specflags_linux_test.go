package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/snakepit/snakepit/internal/testenv"
)

// --setenv adds to the command's environment (ours is kept) and --chdir
// sets its directory, as systemd-run and bwrap do.
func TestRunSetenvChdir(t *testing.T) {
	testenv.RequireCgroup2(t)
	t.Setenv("SP_KEPT", "kept")
	out, stderr, status := lcRun(t, "run", "--setenv", "SP_A=1", "--setenv", "SP_B=two words", "--chdir", "/usr",
		"--", "/bin/sh", "-c", `echo "$SP_A|$SP_B|$SP_KEPT|$(pwd)"`)
	if status != 0 || strings.TrimSpace(out) != "1|two words|kept|/usr" {
		t.Fatalf("status %d, stdout %q, stderr %q", status, out, stderr)
	}
	for _, bad := range [][]string{{"--setenv", "NOEQUALS"}, {"--setenv", "=x"}} {
		_, stderr, status := lcRun(t, append(append([]string{"run"}, bad...), "--", "true")...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if status != exitUsage || !strings.Contains(lines[0], "--setenv") || len(lines) != 2 || lines[1] != "Try 'snakepit run --help'" {
			t.Errorf("%v: status %d, stderr %q; want one line naming --setenv and the pointer to the help, exit 2", bad, status, stderr)
		}
	}
	if _, stderr, status := lcRun(t, "run", "--chdir", "/nonexistent-sp", "--", "true"); status == 0 {
		t.Errorf("--chdir to a missing directory: exit 0 (%s)", stderr)
	}
}

// --oom-group given is asked for, as "oom_group" in the API: true needs
// the memory controller like any limit; left out, it is the default.
func TestOOMGroupFlag(t *testing.T) {
	for args, want := range map[string]string{"": "<nil>", "--oom-group": "true", "--oom-group=true": "true", "--oom-group=false": "false"} {
		var sf specFlags
		fs := newFlagSet(&command{name: "create"})
		sf.addRunFlags(fs, 0, false)
		if err := fs.Parse(strings.Fields(args)); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		got := "<nil>"
		if v := sf.run.Limits.OOMGroup; v != nil {
			got = strconv.FormatBool(*v)
		}
		if got != want {
			t.Errorf("%q: OOMGroup %s, want %s", args, got, want)
		}
	}
}
