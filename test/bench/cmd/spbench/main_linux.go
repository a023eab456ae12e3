package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/systemd"
)

type groupFunc func(context.Context, *config) (GroupOutput, error)

var groups = map[string]groupFunc{
	"spawn":         groupSpawn,
	"teardown":      groupTeardown,
	"gc":            groupGC,
	"guardian":      groupGuardian,
	"daemon":        groupDaemon,
	"memory":        groupMemory,
	"systemd-spawn": groupSystemdSpawn,
}

// groupOrder is the order of `spbench all`.
var groupOrder = []string{"spawn", "teardown", "gc", "guardian", "daemon", "memory"}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  spbench all [--quick] [flags]       run every group, print the table, write results
  spbench group NAME [flags]          run one group, print its JSON (groups: spawn, teardown,
                                      gc, guardian, daemon, memory, systemd-spawn)
  spbench publish --results FILE --docs FILE [--img NAME]
                                      write the results into the docs page
  spbench rmdirloop DIR | killloop DIR  the gc baselines
  spbench owner [--heap-mb M] --parent DIR --id ID -- CMD...
                                      the guardian group's large supervisor
  spbench libserve --socket S --parent DIR
                                      the daemon round trip's floor: the library
                                      behind a bare net/http server`)
}

func realMain(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	switch args[0] {
	case "all":
		return cmdAll(args[1:])
	case "group":
		return cmdGroup(args[1:])
	case "publish":
		return cmdPublish(args[1:])
	case "owner":
		return cmdOwner(args[1:])
	case "libserve":
		return cmdLibserve(args[1:])
	case "rmdirloop", "killloop":
		if len(args) != 2 {
			usage()
			return 2
		}
		f := cmdRmdirLoop
		if args[0] == "killloop" {
			f = cmdKillLoop
		}
		if err := f(args[1]); err != nil {
			fmt.Fprintf(os.Stderr, "spbench %s: %v\n", args[0], err)
			return 1
		}
		return 0
	}
	usage()
	return 2
}

func cmdGroup(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	name := args[0]
	g, ok := groups[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "spbench: unknown group %q\n", name)
		return 2
	}
	var c config
	fs := flag.NewFlagSet("group", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	out, err := g(ctx, &c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "spbench group %s: %v\n", name, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "spbench group %s: %v\n", name, err)
		return 1
	}
	return 0
}

func cmdAll(args []string) int {
	var c config
	fs := flag.NewFlagSet("all", flag.ContinueOnError)
	c.flags(fs)
	outDir := fs.String("out", "test/bench/out", "directory for results.json, results.md and the plot files")
	systemdJSON := fs.String("systemd-json", "", "results of `spbench group systemd-spawn` run inside the systemd rig")
	systemdSkip := fs.String("systemd-skip", "", "why systemd-run --scope could not be measured")
	command := fs.String("command", "spbench all", "the command line to name in the report")
	commit := fs.String("commit", "", "the source revision to name in the report")
	only := fs.String("only", "", "comma-separated groups to run (default: all)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "spbench: cannot run: "+format+"\n", args...)
		return 1
	}
	if os.Geteuid() != 0 {
		return fail("must run as root (it creates cgroups and starts daemons)")
	}
	mnt, err := cgroup.FindMount()
	if err != nil {
		return fail("%v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt.Path, "cgroup.kill")); err != nil {
		// The root cgroup has no cgroup.kill; check a child's.
		probe := filepath.Join(mnt.Path, fmt.Sprintf("spbench-probe.%d", os.Getpid()))
		if err := os.Mkdir(probe, 0o755); err != nil {
			return fail("cannot create a cgroup: %v", err)
		}
		_, kerr := os.Stat(filepath.Join(probe, "cgroup.kill"))
		_ = unix.Rmdir(probe)
		if kerr != nil {
			return fail("no cgroup.kill (kernel < 5.14): the baselines need it")
		}
	}
	for _, p := range []*string{&c.snakepit, &c.perl} {
		if _, err := os.Stat(*p); err != nil {
			return fail("%v", err)
		}
		abs, _ := filepath.Abs(*p)
		*p = abs
	}
	if c.spidle != "" {
		if abs, err := filepath.Abs(c.spidle); err == nil {
			c.spidle = abs
		}
	}
	if c.bwrap == "" {
		c.bwrap, _ = exec.LookPath("bwrap")
	}
	self, err := os.Executable()
	if err != nil {
		return fail("%v", err)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fail("%v", err)
	}

	started := time.Now()
	rep := &Report{Started: started.UTC().Format(time.RFC3339), Command: *command, Commit: *commit, Quick: c.quick,
		Machine: machine(mnt)}

	// The harness's cgroup: everything it starts lives below it, so that
	// whatever happens it can all be killed and removed at the end.
	if c.root == "" {
		c.root = filepath.Join(mnt.Path, fmt.Sprintf("spbench.%d", os.Getpid()))
	}
	if err := os.MkdirAll(c.root, 0o755); err != nil {
		return fail("%v", err)
	}
	orig, _ := cgroup.PathOf(0)
	cleanup := func() {
		// Leave the harness cgroup first, then remove it whole.
		back := filepath.Join(mnt.Path, orig, "cgroup.procs")
		if orig == "" || writeFile(back, "0") != nil {
			fmt.Fprintf(os.Stderr, "spbench: cannot move back to %s; leaving %s to the caller\n", orig, c.driverDir())
			_ = killTreeBelowExcept(c.root, c.driverDir())
			return
		}
		if err := killTree(c.root); err != nil {
			fmt.Fprintf(os.Stderr, "spbench: cleanup: %v\n", err)
		}
	}
	defer cleanup()
	for _, d := range []string{c.driverDir(), c.runsDir(), c.libDir(), c.daemonDir(), c.gcDir(), c.gcPool(), c.scratchDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("%v", err)
		}
	}
	if err := writeFile(filepath.Join(c.driverDir(), "cgroup.procs"), "0"); err != nil {
		return fail("enter %s: %v", c.driverDir(), err)
	}
	if c.tmp == "" {
		t, err := os.MkdirTemp("", "spbench.")
		if err != nil {
			return fail("%v", err)
		}
		defer os.RemoveAll(t)
		c.tmp = t
	}
	// Sockets and logs stay in the scratch directory; nothing points the
	// children at the host's daemon. File records (POSIX runs) and
	// guardian locks go where snakepit puts them by default: a POSIX run
	// whose record another `snakepit gc` on this host cannot find looks
	// orphaned to it, and its /proc scan would kill the run's processes.
	for _, k := range []string{inventory.ParentsEnv, "SNAKEPIT_SOCKET", guardian.LogEnv, "NOTIFY_SOCKET"} {
		os.Unsetenv(k)
	}
	// Library runs are guarded by default, as in a user's program: by the
	// guardian service, started from the snakepit binary measured here.
	os.Setenv(guardian.BinaryEnv, c.snakepit)
	// Our own guardian service: another harness on this host may kill its
	// own, and must not kill ours.
	os.Setenv(guardian.DirEnv, c.tmp)

	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	defer stop()

	want := map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		if g = strings.TrimSpace(g); g != "" {
			want[g] = true
		}
	}
	for _, g := range groupOrder {
		if len(want) > 0 && !want[g] {
			continue
		}
		if d, n := settleCgroups(ctx, c.root); d > time.Second {
			rep.Notes = append(rep.Notes, fmt.Sprintf("before group %s: waited %.1f s for the kernel to finish destroying the previous groups' cgroups (%d still dying)", g, d.Seconds(), n))
		}
		t0 := time.Now()
		progress("group %s", g)
		out, err := runGroup(ctx, &c, self, g)
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "spbench: interrupted; cleaning up")
			return 130
		}
		if err != nil {
			rep.Results = append(rep.Results, Result{Group: g, Case: "(whole group)", Method: "-", Error: err.Error()})
			progress("group %s failed: %v", g, err)
			continue
		}
		rep.Results = append(rep.Results, out.Results...)
		rep.Notes = append(rep.Notes, out.Notes...)
		progress("group %s done in %.1f s", g, time.Since(t0).Seconds())
	}
	if len(want) == 0 || want["systemd"] || want["spawn"] {
		rep.Results = append(rep.Results, systemdResults(ctx, &c, self, *systemdJSON, *systemdSkip)...)
		if ctx.Err() != nil {
			return 130
		}
	}
	// The systemd rows belong right after the other spawn rows.
	sortByGroup(rep.Results)

	rep.Targets = evalTargets(rep.Results)
	rep.Machine.LoadEnd = loadavg()
	rep.Duration = time.Since(started).Round(time.Second).String()

	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fail("%v", err)
	}
	var errs []error
	errs = append(errs, os.WriteFile(filepath.Join(*outDir, "results.json"), append(b, '\n'), 0o644))
	errs = append(errs, os.WriteFile(filepath.Join(*outDir, "results.md"), []byte(markdown(rep, "teardown.png")), 0o644))
	if _, err := plotFiles(rep, *outDir, "teardown.png"); err != nil {
		rep.Notes = append(rep.Notes, "no plot: "+err.Error())
	}
	fmt.Println(terminal(rep))
	if err := errors.Join(errs...); err != nil {
		return fail("writing results: %v", err)
	}
	fmt.Printf("\nresults: %s/results.json, %s/results.md\n", *outDir, *outDir)
	return 0
}

// runGroup runs one group in a child process (so that reapers, subreaper
// status and mount namespaces never mix between groups) and decodes its
// JSON.
func runGroup(ctx context.Context, c *config, self, name string) (GroupOutput, error) {
	var out GroupOutput
	argv := append([]string{self, "group", name}, c.args()...)
	if name == "gc" {
		// A private mount namespace in which the harness's stale-run pool
		// shadows the host's default run parent (see gcPool).
		dp, err := cgroup.DefaultParent()
		if err != nil {
			return out, err
		}
		script := `set -e
if [ -d "$2" ]; then mount --bind "$1" "$2"; fi
if [ -e "$3" ]; then mount --bind /dev/null "$3"; fi
shift 3
exec "$@"`
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
			c.gcPool(), dp, inventory.DaemonParentsFile}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 90 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return out, fmt.Errorf("group %s: %w", name, err)
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return out, fmt.Errorf("group %s: bad output: %w", name, err)
	}
	return out, nil
}

// systemdResults measures `systemd-run --scope` here when systemd is PID 1,
// else takes the figures measured inside the systemd rig by run.sh.
func systemdResults(ctx context.Context, c *config, self, file, skip string) []Result {
	const method = "systemd-run --scope (in the systemd rig)"
	missing := func(why string) []Result {
		return []Result{{Group: "spawn", Case: "/bin/true in the systemd rig", Method: method, Unit: "ms", Error: why}}
	}
	if systemd.IsRunning() {
		progress("group systemd-spawn (systemd is PID 1 here: measured on the host)")
		out, err := runGroup(ctx, c, self, "systemd-spawn")
		if err != nil {
			return missing(err.Error())
		}
		for i := range out.Results {
			out.Results[i].Case = "/bin/true, systemd is PID 1"
			out.Results[i].Method = strings.ReplaceAll(out.Results[i].Method, "in the systemd rig", "on the host")
		}
		for i := range out.Results {
			if out.Results[i].Baseline != "" {
				out.Results[i].Baseline = strings.ReplaceAll(out.Results[i].Baseline, "in the systemd rig", "on the host")
			}
		}
		return out.Results
	}
	if file == "" {
		if skip == "" {
			skip = "systemd is not PID 1 here and no systemd rig results were given"
		}
		return missing(skip)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return missing(err.Error())
	}
	var out GroupOutput
	if err := json.Unmarshal(b, &out); err != nil {
		return missing(fmt.Sprintf("bad rig results %s: %v", file, err))
	}
	return out.Results
}

// sortByGroup orders results by the table's sections, keeping the order
// within each.
func sortByGroup(rs []Result) {
	rank := map[string]int{}
	for i, g := range groupTitles {
		rank[g.group] = i
	}
	var sorted []Result
	for i := range groupTitles {
		for _, r := range rs {
			if rank[r.Group] == i {
				sorted = append(sorted, r)
			}
		}
	}
	copy(rs, sorted)
}

func cmdPublish(args []string) int {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	results := fs.String("results", "test/bench/out/results.json", "results written by spbench all")
	docs := fs.String("docs", "docs/BENCHMARKS.md", "docs page whose generated part is replaced")
	img := fs.String("img", "", "the plot, as the docs page links it (empty: no plot)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, err := os.ReadFile(*results)
	if err != nil {
		fmt.Fprintf(os.Stderr, "spbench publish: %v\n", err)
		return 1
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintf(os.Stderr, "spbench publish: %v\n", err)
		return 1
	}
	if err := spliceDocs(*docs, markdown(&rep, *img)); err != nil {
		fmt.Fprintf(os.Stderr, "spbench publish: %v\n", err)
		return 1
	}
	return 0
}

// killTreeBelowExcept removes everything below root but keep (and root).
func killTreeBelowExcept(root, keep string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if p := filepath.Join(root, e.Name()); e.IsDir() && p != keep {
			errs = append(errs, killTree(p))
		}
	}
	return errors.Join(errs...)
}

func machine(m cgroup.Mount) Machine {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	mi := Machine{
		CPUs:        runtime.NumCPU(),
		Kernel:      unix.ByteSliceToString(uts.Release[:]),
		CgroupMode:  string(m.Mode),
		CgroupMount: m.Path,
		GoVersion:   runtime.Version(),
		SystemdPID1: systemd.IsRunning(),
		LoadStart:   loadavg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				mi.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb float64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				mi.MemTotal = fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
	}
	return mi
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// settleCgroups waits (up to a minute) until no cgroup below root is still being
// destroyed (cgroup.stat nr_dying_descendants). The kernel frees removed
// cgroups in the background (the cgroup_offline workqueue); after a group
// that removed thousands of them, that work would otherwise run during
// the next group's measurements and inflate its absolute times.
func settleCgroups(ctx context.Context, root string) (waited time.Duration, dying int) {
	t0 := time.Now()
	for {
		dying = 0
		if b, err := os.ReadFile(filepath.Join(root, "cgroup.stat")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "nr_dying_descendants "); ok {
					dying, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
		}
		if dying == 0 || time.Since(t0) > time.Minute || ctx.Err() != nil {
			return time.Since(t0), dying
		}
		time.Sleep(50 * time.Millisecond)
	}
}
