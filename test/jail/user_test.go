//go:build linux

package jail_test

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// A worker run as nobody has nobody's UID and GID and no_new_privs, cannot
// move itself (or its children) out of the run, and is still torn down
// with everything it started.
func TestUserNobody(t *testing.T) {
	m := testenv.RequireCgroup2(t)
	u, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "needs a nobody user: %v", err)
	}
	// Another cgroup the worker might try to escape into.
	other, err := cgroup.Create(filepath.Join(m.Path, "snakepit"), "snakepit-test-escape-"+runid.Generate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Rmdir(other.Path()); err != nil {
			t.Errorf("remove %s: %v", other.Path(), err)
		}
	})
	id := newRunID(t)
	script := fmt.Sprintf(`
id -u; id -g
grep NoNewPrivs /proc/self/status
for f in %s/cgroup.procs %s/cgroup.procs; do
  if echo $$ > $f; then echo "ESCAPED to $f"; else echo "denied $f"; fi
done
sleep 1000 & echo "child $!"
setsid sleep 1000 & echo "child $!"
echo up
exec sleep 1000`, other.Path(), m.Path)
	cmd, sc, errb := startCLI(t, nil, "run", "--no-guardian", "--run-id", id, "--user", "nobody", "--grace", "2s", "--", "sh", "-c", script)
	var out []string
	for {
		l := readLineTimeout(t, sc, 30*time.Second)
		if l == "up" {
			break
		}
		out = append(out, l)
	}
	t.Logf("worker said: %q", out)
	if len(out) < 3 || out[0] != u.Uid || out[1] != u.Gid {
		t.Fatalf("worker UID/GID lines %q, want %s and %s; stderr %s", out, u.Uid, u.Gid, errb)
	}
	if !strings.HasSuffix(out[2], "1") {
		t.Errorf("no_new_privs not set: %q", out[2])
	}
	var children []int
	for _, l := range out[3:] {
		if strings.HasPrefix(l, "ESCAPED") {
			t.Errorf("worker as nobody moved itself: %s", l)
		}
		var pid int
		if _, err := fmt.Sscanf(l, "child %d", &pid); err == nil {
			children = append(children, pid)
		}
	}
	if strings.Count(strings.Join(out, "\n"), "denied") != 2 {
		t.Errorf("expected two refused moves: %q (stderr %s)", out, errb)
	}
	// Everything is still in the run cgroup, and the cgroup files are root's.
	// Wherever the run was placed (under systemd: a scope of its own).
	g, err := inventory.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	pids, _ := g.ProcsRecursive()
	var fds []int
	for _, pid := range pids {
		fds = append(fds, pidfd(t, pid))
	}
	if len(pids) != 3 {
		t.Errorf("run cgroup holds %v, want the worker and its 2 children %v", pids, children)
	}
	// SIGTERM to the wrapper: forwarded, and the run is torn down.
	_ = cmd.Process.Signal(unix.SIGTERM)
	code := waitStatus(t, cmd, 30*time.Second)
	t.Logf("wrapper exit %d", code)
	for i, fd := range fds {
		if !reaper.PidfdExited(fd, 5*time.Second) {
			t.Errorf("PID %d (nobody) survived the teardown", pids[i])
		}
	}
	if _, err := os.Stat(g.Path()); err == nil {
		t.Errorf("run cgroup %s still exists", g.Path())
	}
}

// no_new_privs is on by default and can be turned off.
func TestNoNewPrivs(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, c := range []struct {
		flag, want string
	}{{"--no-new-privs=true", "1"}, {"--no-new-privs=false", "0"}} {
		res := runCLI(t, nil, "run", "--no-guardian", c.flag, "--", "grep", "NoNewPrivs", "/proc/self/status")
		if res.code != 0 || !strings.HasSuffix(strings.TrimSpace(res.stdout), c.want) {
			t.Errorf("%s: exit %d, %q", c.flag, res.code, res.stdout)
		}
	}
	res := runCLI(t, nil, "run", "--no-guardian", "--", "grep", "NoNewPrivs", "/proc/self/status")
	if !strings.HasSuffix(strings.TrimSpace(res.stdout), "1") {
		t.Errorf("default: %q", res.stdout)
	}
}

// --group and --groups, numeric UIDs without a database entry, unknown
// names.
func TestUserGroups(t *testing.T) {
	testenv.RequireCgroup2(t)
	res := runCLI(t, nil, "run", "--no-guardian", "--user", "nobody", "--group", "0", "--groups", "1,2", "--",
		"sh", "-c", "id -u; id -g; id -G")
	if got := lines(res.stdout); res.code != 0 || len(got) != 3 || got[1] != "0" || !strings.Contains(got[2], "1 2") {
		t.Errorf("--group/--groups: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, nil, "run", "--no-guardian", "--user", "54321", "--", "sh", "-c", "id -u; id -g; id -G")
	if got := lines(res.stdout); res.code != 0 || len(got) != 3 || got[0] != "54321" || got[1] != "54321" || got[2] != "54321" {
		t.Errorf("bare UID: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, nil, "run", "--no-guardian", "--user", "no-such-user-xyz", "--", "true")
	// A bad argument (exit 2), rejected before any run cgroup is made.
	if res.code != 2 || !strings.Contains(res.stderr, "not in the user database") {
		t.Errorf("unknown user: exit %d, %q", res.code, res.stderr)
	}
}

// `snakepit exec --user`: the command joins the run (its cgroup is the
// run's), then runs as that user with no_new_privs, keeping exec's PID;
// --no-new-privs=false leaves it off; an unknown user is a usage error.
func TestExecUser(t *testing.T) {
	testenv.RequireCgroup2(t)
	testenv.RequireRoot(t)
	id := runid.Generate()
	t.Cleanup(func() { cleanupRun(t, id, false) })
	if res := runCLI(t, nil, "create", "--run-id", id, "--no-guardian"); res.code != 0 {
		t.Fatalf("create: exit %d: %s", res.code, res.stderr)
	}
	res := runCLI(t, nil, "exec", "--user", "nobody", id, "--", "sh", "-c",
		`id -u; id -g; grep NoNewPrivs /proc/self/status; sed -n 's/^0:://p' /proc/self/cgroup; echo "$USER"`)
	got := lines(res.stdout)
	if res.code != 0 || len(got) != 5 || got[0] != "65534" || got[1] != "65534" || got[2] != "NoNewPrivs:\t1" ||
		!strings.HasSuffix(got[3], "/snakepit-"+id) || got[4] != "nobody" {
		t.Errorf("exec --user nobody: exit %d, %q, %s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, nil, "exec", "--no-new-privs=false", id, "--", "grep", "NoNewPrivs", "/proc/self/status")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "NoNewPrivs:\t0" {
		t.Errorf("exec --no-new-privs=false: exit %d, %q", res.code, res.stdout)
	}
	res = runCLI(t, nil, "exec", "--user", "no-such-user-xyz", id, "--", "true")
	if res.code != 2 || !strings.Contains(res.stderr, "not in the user database") {
		t.Errorf("exec --user unknown: exit %d, %q", res.code, res.stderr)
	}
	if res := runCLI(t, nil, "kill", "--grace", "0s", id); res.code != 0 {
		t.Fatalf("kill: exit %d: %s", res.code, res.stderr)
	}
}
