package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// helpedCommands are the commands `snakepit --help` lists, read from the
// binary's own output; the test fails if it differs from the table.
func helpedCommands(t *testing.T) []string {
	t.Helper()
	out, stderr, status := lcRun(t, "--help")
	if status != 0 || stderr != "" {
		t.Fatalf("snakepit --help: status %d, stderr %q", status, stderr)
	}
	sec := regexp.MustCompile(`(?s)Commands:\n(.*?)\n\n`).FindStringSubmatch(out)
	if sec == nil {
		t.Fatalf("snakepit --help lists no commands:\n%s", out)
	}
	var names []string
	for _, l := range strings.Split(sec[1], "\n") {
		names = append(names, strings.Fields(l)[0])
	}
	var want []string
	for _, c := range visibleCommands() {
		want = append(want, c.name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("snakepit --help lists %v, the command table has %v", names, want)
	}
	return names
}

// Every subcommand: --help and -h print its help on stdout and exit 0,
// `help CMD` prints the same, the help lists every flag and exit status,
// and a bad flag is at most 3 lines on stderr, exit 2, pointing to the
// command's help.
func TestEveryCommandHelpAndUsageError(t *testing.T) {
	for _, top := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, stderr, status := lcRun(t, top...)
		if status != 0 || stderr != "" || !strings.HasPrefix(out, "Usage: snakepit COMMAND") {
			t.Errorf("snakepit %v: status %d, stderr %q, stdout %.60q", top, status, stderr, out)
		}
	}
	ver, _, _ := lcRun(t, "version")
	for _, v := range []string{"-v", "--version"} {
		if out, stderr, status := lcRun(t, v); status != 0 || out != ver || stderr != "" {
			t.Errorf("snakepit %s: status %d, stdout %q (want %q), stderr %q", v, status, out, ver, stderr)
		}
	}
	for _, name := range helpedCommands(t) {
		c := commands[name]
		help, stderr, status := lcRun(t, name, "--help")
		if status != 0 || stderr != "" || !strings.HasPrefix(help, "Usage: snakepit "+name) {
			t.Errorf("%s --help: status %d, stderr %q, stdout %.60q", name, status, stderr, help)
			continue
		}
		for _, args := range [][]string{{name, "-h"}, {"help", name}} {
			if out, stderr, status := lcRun(t, args...); status != 0 || out != help || stderr != "" {
				t.Errorf("snakepit %v: status %d, stderr %q, stdout differs from %s --help:\n%s", args, status, stderr, name, out)
			}
		}
		for _, f := range flagsOf(c).flags {
			if !strings.Contains(help, "--"+f.long) {
				t.Errorf("%s --help does not list --%s", name, f.long)
			}
		}
		for _, e := range exitsOf(c) {
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(e.status) + ` +` + regexp.QuoteMeta(e.meaning) + `$`).MatchString(help) {
				t.Errorf("%s --help does not list exit status %s (%s)", name, e.status, e.meaning)
			}
		}
		_, stderr, status = lcRun(t, name, "--no-such-flag", "x")
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if status != exitUsage || len(lines) > 3 || !strings.Contains(lines[0], "--no-such-flag") ||
			lines[len(lines)-1] != "Try 'snakepit "+name+" --help'" {
			t.Errorf("%s --no-such-flag: status %d, stderr %q; want exit 2, at most 3 lines naming the flag, then Try 'snakepit %s --help'", name, status, stderr, name)
		}
	}
}

// Bad values and contradictions: one line naming the flag and the form it
// wants, then the pointer to the help; exit 2; nothing is run.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // in the first line
	}{
		{[]string{"run", "--grace", "5", "--", "true"}, []string{"--grace", "5s"}},
		{[]string{"run", "--grace=5", "--", "true"}, []string{"--grace", "5s"}},
		{[]string{"run", "--timeout", "5", "--", "true"}, []string{"--timeout", "5s"}},
		{[]string{"run", "--stop-signal", "NOPE", "--", "true"}, []string{"--stop-signal", "TERM"}},
		{[]string{"run", "--mode", "cgroup", "--no-cgroup", "--", "true"}, []string{"--mode cgroup", "--no-cgroup", "contradict"}},
		{[]string{"run", "--no-cgroup", "--memory-max", "64M", "--", "true"}, []string{"--no-cgroup", "--memory-max"}},
		{[]string{"run", "--mode", "posix", "--cgroup-parent", "/sys/fs/cgroup/x", "--", "true"}, []string{"--mode posix", "--cgroup-parent"}},
		{[]string{"run", "--mode", "sometimes", "--", "true"}, []string{"--mode", "auto|cgroup|posix"}},
		{[]string{"run", "--ready-fd", "x", "--", "true"}, []string{"--ready-fd"}},
		{[]string{"run", "--grace"}, []string{"--grace", "needs a value"}},
		{[]string{"run", "-Z", "--", "true"}, []string{"-Z"}},
		{[]string{"kill", "--grace", "5", "abc1234"}, []string{"--grace", "5s"}},
		{[]string{"gc", "--only-parents"}, []string{"--only-parents", "--cgroup-parent"}},
		{[]string{"daemon", "--max-runs", "-1"}, []string{"--max-runs"}},
		{[]string{"completion", "tcsh"}, []string{"tcsh"}},
	} {
		stdout, stderr, status := lcRun(t, tc.args...)
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		ok := status == exitUsage && stdout == "" && len(lines) == 2 && lines[1] == "Try 'snakepit "+tc.args[0]+" --help'"
		for _, w := range tc.want {
			ok = ok && strings.Contains(lines[0], w)
		}
		if !ok {
			t.Errorf("%q: status %d, stderr %q; want exit 2 and one line naming %q, then Try 'snakepit %s --help'", tc.args, status, stderr, tc.want, tc.args[0])
		}
	}
	for _, args := range [][]string{{}, {"nosuch"}, {"--nosuch"}} {
		_, stderr, status := lcRun(t, args...)
		if lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n"); status != exitUsage || len(lines) != 2 || lines[1] != "Try 'snakepit --help'" {
			t.Errorf("snakepit %q: status %d, stderr %q; want exit 2, two lines", args, status, stderr)
		}
	}
}

// GNU forms: -E K=V, -EK=V, -C DIR, --flag=V, grouped switches, and
// options after operands for commands without a CMD.
func TestGNUForms(t *testing.T) {
	testenv.RequireCgroup2(t)
	out, stderr, status := lcRun(t, "run", "-q", "-EA=1", "-E", "B=2", "-C/usr", "--setenv=C=3", "--", "/bin/sh", "-c", `echo "$A$B$C $(pwd)"`)
	if status != 0 || strings.TrimSpace(out) != "123 /usr" {
		t.Errorf("status %d, stdout %q, stderr %q", status, out, stderr)
	}
	// Flags after CMD are CMD's.
	out, _, status = lcRun(t, "run", "-q", "/bin/echo", "--grace", "-h")
	if status != 0 || strings.TrimSpace(out) != "--grace -h" {
		t.Errorf("run echo --grace -h: status %d, stdout %q", status, out)
	}
	out, stderr, status = lcRun(t, "ps", "--cgroup-parent", t.TempDir(), "--json")
	var runs []any
	if status != 0 || json.Unmarshal([]byte(out), &runs) != nil {
		t.Errorf("ps with a flag after another: status %d, stdout %q, stderr %q", status, out, stderr)
	}
}

// The completion scripts load in their shells and complete from the
// table (bash: functionally; zsh and fish when installed).
func TestCompletionScripts(t *testing.T) {
	bash := testenv.RequireTool(t, "bash")
	script := `source <("$SP" completion bash) || exit 1
c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _snakepit; echo "${COMPREPLY[*]}"; }
c snakepit ru
c snakepit run --stop-s
c snakepit run --mode ''
c snakepit run -C /us
c snakepit completion ''
`
	cmd := exec.Command(bash, "--norc", "-c", script)
	cmd.Env = append(os.Environ(), "SP="+binPath)
	out, err := cmd.CombinedOutput()
	want := "run\n--stop-signal\nauto cgroup posix\n/usr\nbash zsh fish\n"
	if err != nil || string(out) != want {
		t.Errorf("bash completion: %v\n%s\nwant\n%s", err, out, want)
	}
	for _, sh := range []struct{ name, script string }{
		{"zsh", `autoload -U compinit && compinit -u && source <("$SP" completion zsh) && (( $+functions[_snakepit] ))`},
		{"fish", `"$SP" completion fish | source; and complete -C 'snakepit run --stop-s' | string match -q -- '--stop-signal*'`},
	} {
		p, err := exec.LookPath(sh.name)
		if err != nil {
			t.Logf("%s not installed: its completion is not checked", sh.name)
			continue
		}
		cmd := exec.Command(p, "-c", sh.script)
		cmd.Env = append(os.Environ(), "SP="+binPath, "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("%s completion: %v, output %q", sh.name, err, out)
		}
	}
}

// The man page renders without warnings and documents every command,
// flag and exit status.
func TestManPage(t *testing.T) {
	man := testenv.RequireTool(t, "man")
	page := filepath.Join(t.TempDir(), "snakepit.1")
	src, stderr, status := lcRun(t, manCommand)
	if status != 0 || stderr != "" {
		t.Fatalf("%s: status %d, stderr %q", manCommand, status, stderr)
	}
	if err := os.WriteFile(page, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(man, "--warnings", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=200", "MANPAGER=cat", "PAGER=cat")
	var e strings.Builder
	cmd.Stderr = &e
	out, err := cmd.Output()
	if err != nil || e.Len() > 0 {
		t.Fatalf("man -l: %v, stderr %q", err, e.String())
	}
	text := string(out)
	for _, c := range visibleCommands() {
		if !strings.Contains(text, "snakepit "+c.name) {
			t.Errorf("man page lacks command %s", c.name)
		}
		for _, f := range flagsOf(c).flags {
			if !strings.Contains(text, "--"+f.long) {
				t.Errorf("man page lacks %s --%s", c.name, f.long)
			}
		}
	}
	for code := range exitTable {
		if !regexp.MustCompile(`(?m)^\s+` + itoa(code) + `(\s|$)`).MatchString(text) {
			t.Errorf("man page lacks exit status %d", code)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// --timeout: exit 124 once CMD has run too long, and the run, its
// background child too, is gone by the time the wrapper has exited.
func TestRunTimeout(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, mode := range []string{"cgroup", "posix"} {
		id := runid.Generate()
		cleanupRun(t, id)
		cmd := snakepitCmd(t, "run", "--mode", mode, "--run-id", id, "--grace", "100ms", "--timeout", "300ms",
			"--", "sh", "-c", `sleep 300 & echo $!; echo $$; exec sleep 300`)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var e strings.Builder
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var pids []int
		sc := bufio.NewScanner(stdout)
		for len(pids) < 2 && sc.Scan() {
			var pid int
			if err := json.Unmarshal(sc.Bytes(), &pid); err == nil {
				pids = append(pids, pid)
			}
		}
		// The pidfds pin the very processes: a reused PID is not them.
		var fds []int
		for _, pid := range pids {
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				t.Fatalf("%s: pidfd_open %d: %v", mode, pid, err)
			}
			defer unix.Close(fd)
			fds = append(fds, fd)
		}
		_, _ = io.Copy(io.Discard, stdout)
		if code := exitStatus(t, cmd.Wait()); code != exitTimeout || !strings.Contains(e.String(), "timed out") {
			t.Errorf("%s: exit %d, stderr %q; want %d and a line saying it timed out", mode, code, e.String(), exitTimeout)
		}
		for i, fd := range fds {
			// Signal 0 through the pidfd: ESRCH once the process has exited.
			if err := unix.PidfdSendSignal(fd, 0, nil, 0); !errors.Is(err, unix.ESRCH) {
				t.Errorf("%s: process %d of the run outlived the wrapper (%v)", mode, pids[i], err)
			}
		}
	}
	// A command that ends in time keeps its own status.
	if _, stderr, status := lcRun(t, "run", "--timeout", "1m", "--", "sh", "-c", "exit 3"); status != 3 {
		t.Errorf("--timeout 1m, exit 3: status %d, stderr %q", status, stderr)
	}
}

// --stop-signal: the teardown's first signal is the one asked for; a
// worker that traps it records it. The teardown is started by stdin's EOF
// (--exit-with-stdin), once the worker says its traps are set.
func TestRunStopSignal(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, tc := range []struct {
		mode string
		args []string
		want string
	}{
		{"cgroup", nil, "TERM"},
		{"cgroup", []string{"--stop-signal", "INT"}, "INT"},
		{"cgroup", []string{"--stop-signal=SIGUSR1"}, "USR1"},
		{"posix", []string{"--stop-signal", "2"}, "INT"},
	} {
		rec := filepath.Join(t.TempDir(), "got")
		args := append([]string{"run", "--mode", tc.mode, "--exit-with-stdin", "--grace", "5s"}, tc.args...)
		args = append(args, "--", "sh", "-c", `
for s in TERM INT USR1; do trap "echo $s > $REC; exit 0" $s; done
echo ready
while :; do sleep 0.05; done`)
		cmd := snakepitCmd(t, args...)
		cmd.Env = append(os.Environ(), "REC="+rec)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var e strings.Builder
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if line != "ready\n" {
			t.Fatalf("%v: worker said %q, stderr %q", tc.args, line, e.String())
		}
		stdin.Close()
		err = cmd.Wait()
		got, _ := os.ReadFile(rec)
		if strings.TrimSpace(string(got)) != tc.want {
			t.Errorf("%s %v: the worker recorded %q (exit %v, stderr %q), want %s", tc.mode, tc.args, got, err, e.String(), tc.want)
		}
	}
}

// The JSON form of the stop signal is its name.
func TestStopSignalSpec(t *testing.T) {
	r, err := spec.DecodeRun([]byte(`{"stop_signal":"INT"}`))
	if err != nil || r.StopSignal != spec.Signal(syscall.SIGINT) {
		t.Fatalf("DecodeRun: %+v, %v", r, err)
	}
	b, _ := json.Marshal(r)
	if string(b) != `{"stop_signal":"SIGINT"}` {
		t.Errorf("Marshal: %s", b)
	}
	var fe *spec.FieldError
	if _, err := spec.DecodeRun([]byte(`{"stop_signal":"NOPE"}`)); !errors.As(err, &fe) || fe.Field != "stop_signal" || !errors.Is(err, spec.ErrBadSignal) {
		t.Errorf("bad stop_signal: %v", err)
	}
}

// --quiet: no notice on stderr (here: the POSIX fallback of a run without
// root), errors still.
func TestRunQuiet(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		args := []string{"run", "--", "sh", "-c", "exit 5"}
		if quiet {
			args = []string{"run", "-q", "--", "sh", "-c", "exit 5"}
		}
		cmd := snakepitCmd(t, args...)
		asNobody(t, cmd)
		var e strings.Builder
		cmd.Stderr = &e
		if code := exitStatus(t, cmd.Run()); code != 5 {
			t.Fatalf("%v: exit %d, want 5; stderr %q", args, code, e.String())
		}
		if noticed := strings.Contains(e.String(), "using POSIX mode"); noticed == quiet || (quiet && e.Len() > 0) {
			t.Errorf("%v: stderr %q", args, e.String())
		}
	}
	if _, stderr, status := lcRun(t, "run", "-q", "--", "/nonexistent/sp-cmd"); status != exitNotFound || !strings.Contains(stderr, "nonexistent") {
		t.Errorf("-q must not hide errors: status %d, stderr %q", status, stderr)
	}
}
