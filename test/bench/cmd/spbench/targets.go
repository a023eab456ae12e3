package main

import (
	"fmt"
	"strings"
)

// Names shared by the groups and the target checks.
const (
	spawnCase     = "/bin/true, start to reaped"
	spawnPlain    = "plain os/exec"
	spawnLib      = "library: Run.Start into a run cgroup"
	spawnCLI      = "snakepit run -- /bin/true (whole process)"
	spawnBwrap    = "bwrap --dev-bind / / --unshare-pid --die-with-parent"
	gcEmptySuffix = "stale empty runs"
	daemonRTCase  = "round trip: create run, spawn sleep (until it sleeps), kill run"
	daemonRTLib   = "library: Create + Start + Teardown"
	daemonRTAPI   = "daemon API: POST run + POST worker + DELETE run"
	// daemonRTFloor: the same three library calls behind a bare net/http
	// server in a process of its own (spbench libserve).
	daemonRTFloor = "floor: the library calls behind a bare net/http server"
	daemonTPCase  = "throughput, 8 concurrent callers (round trips/s)"
	daemonTPAPI   = "daemon API, 8 clients"
	daemonRSSCase = "daemon RSS"
	daemonStatus  = "GET /v1/status"
	guardianRow   = "guardian: SIGKILL snakepit run -> all gone, cgroup removed"
	// guardianFloorRow: the owner's SIGKILL and its run's cgroup.kill at
	// once, by the bench: a guardian that takes no time to react.
	guardianFloorRow = "floor: SIGKILL snakepit run --no-guardian and cgroup.kill at once"
	// guardianHeapRow's supervisor is a Go program with a large heap.
	guardianHeapRow = "guardian: SIGKILL Go supervisor (large heap) -> all gone, cgroup removed"
	// guardianExecRow: the same supervisor, guarded by the exec'd
	// per-owner guardian (the fallback, and the daemon's own) instead of
	// the service.
	guardianExecRow = "exec'd guardian: SIGKILL Go supervisor (large heap) -> all gone, cgroup removed"

	tdBare     = "bare cgroup.kill + wait + rmdir"
	tdSnakepit = "snakepit: Run.Teardown(grace 0)"
	tdPOSIX    = "POSIX fallback: Run.Teardown (--no-cgroup)"
	tdPgid     = "kill(-pgid, SIGKILL) + wait for the group"
)

// daemonScaleRow is the row of a daemon filled with n runs.
func daemonScaleRow(n int) string { return fmt.Sprintf("%d runs x 1 worker", n) }

// Target statuses.
const (
	Pass        = "PASS"
	Fail        = "FAIL"
	NotMeasured = "NOT MEASURED"
)

// Target is one of the targets, checked against this run's rows.
type Target struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Status string `json:"status"`
}

type resultSet []Result

// find returns the row of group/case/method (nil if absent or in error).
func (rs resultSet) find(group, cas, method string) (*Result, string) {
	for i := range rs {
		r := &rs[i]
		if r.Group == group && r.Case == cas && r.Method == method {
			if r.Error != "" {
				return nil, r.Error
			}
			return r, ""
		}
	}
	return nil, "not measured"
}

func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f ms", v)
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// evalTargets checks the targets. Where quick mode measured a
// smaller N than a target names, the target is checked at the largest N
// measured and says so.
func evalTargets(rs resultSet) []Target {
	var out []Target
	check := func(name, want string, ok bool, got string) {
		st := Fail
		if ok {
			st = Pass
		}
		out = append(out, Target{Name: name, Want: want, Got: got, Status: st})
	}
	missing := func(name, want, why string) {
		out = append(out, Target{Name: name, Want: want, Got: why, Status: NotMeasured})
	}

	// 1. Spawn overhead.
	{
		name, want := "spawn overhead: library vs plain os/exec", "<= 1.05x"
		if r, why := rs.find("spawn", spawnCase, spawnLib); r == nil {
			missing(name, want, why)
		} else {
			check(name, want, r.Ratio <= 1.05, fmt.Sprintf("%.3fx (%s vs %s)", r.Ratio, fmtMs(r.Median), fmtMs(r.Median/r.Ratio)))
		}
	}
	// 2. snakepit run vs bwrap, CPU time beside.
	{
		name, want := "`snakepit run -- /bin/true` (whole process, guardian included) vs bwrap", "<= 1.2x"
		cli, why1 := rs.find("spawn", spawnCase, spawnCLI)
		bw, why2 := rs.find("spawn", spawnCase, spawnBwrap)
		switch {
		case cli == nil:
			missing(name, want, why1)
		case bw == nil:
			missing(name, want, "bwrap: "+why2)
		default:
			got := fmt.Sprintf("%.2fx (%s vs %s)", cli.Median/bw.Median, fmtMs(cli.Median), fmtMs(bw.Median))
			if a, b := cli.Extra["cpu_ms_median"], bw.Extra["cpu_ms_median"]; a > 0 && b > 0 {
				got += fmt.Sprintf("; CPU %s vs %s", fmtMs(a), fmtMs(b))
			}
			check(name, want, cli.Median <= 1.2*bw.Median, got)
		}
	}
	// 3. Teardown at most 1.1x bare at N = 10, 100 and 1000 (those
	// measured). This replaces "N=10 teardown < 2 ms" (on this host's
	// kernel the cgroup.kill write alone takes longer) and "POSIX >= 1.5x
	// slower" (process exit dominates both): targets that an
	// implementation can move.
	for _, sh := range []string{"flat", "setsid"} {
		for _, n := range []int{10, 100, 1000} {
			name, want := fmt.Sprintf("teardown %s, N=%d: snakepit vs bare cgroup.kill+wait+rmdir", sh, n), "<= 1.1x"
			if sp, why := rs.find("teardown", fmt.Sprintf("N=%d %s", n, sh), tdSnakepit); sp == nil {
				missing(name, want, why)
			} else {
				check(name, want, sp.Ratio <= 1.1, fmt.Sprintf("%.2fx (%s vs %s)", sp.Ratio, fmtMs(sp.Median), fmtMs(sp.Median/sp.Ratio)))
			}
		}
	}
	// 6. gc of stale empty runs.
	{
		name, want := "gc of 1000 stale empty runs vs bare rmdir loop", "<= 3x"
		var r *Result
		why := "not measured"
		for i := range rs {
			x := &rs[i]
			if x.Group == "gc" && strings.HasSuffix(x.Case, gcEmptySuffix) && x.Baseline != "" {
				if x.Error != "" {
					why = x.Error
					continue
				}
				r = x
				if !strings.HasPrefix(x.Case, "1000 ") {
					name = "gc of " + x.Case + " (1000 in the full run) vs bare rmdir loop"
				}
			}
		}
		if r == nil {
			missing(name, want, why)
		} else {
			check(name, want, r.Ratio <= 3, fmt.Sprintf("%.2fx (%s vs %s)", r.Ratio, fmtMs(r.Median), fmtMs(r.Median/r.Ratio)))
		}
	}
	// 7. Guardian reaction: owner SIGKILL to all gone vs a bare kill of
	// a live run of the same size.
	for _, n := range []int{10, 100} {
		name, want := fmt.Sprintf("guardian: SIGKILL of the supervisor to all gone vs bare kill, N=%d", n), "<= 1.1x"
		if r, why := rs.find("guardian", fmt.Sprintf("N=%d flat", n), guardianRow); r == nil {
			missing(name, want, why)
		} else {
			got := fmt.Sprintf("%.2fx (%s vs %s)", r.Ratio, fmtMs(r.Median), fmtMs(r.Median/r.Ratio))
			if f, _ := rs.find("guardian", fmt.Sprintf("N=%d flat", n), guardianFloorRow); f != nil {
				got += fmt.Sprintf("; no-reaction floor %.2fx", f.Ratio)
			}
			check(name, want, r.Ratio <= 1.1, got)
		}
	}
	// 8. Daemon round trip.
	{
		name, want := "daemon round trip overhead over the library call", "<= +1 ms"
		lib, why1 := rs.find("daemon", daemonRTCase, daemonRTLib)
		d, why2 := rs.find("daemon", daemonRTCase, daemonRTAPI)
		switch {
		case lib == nil:
			missing(name, want, why1)
		case d == nil:
			missing(name, want, why2)
		default:
			o := d.Median - lib.Median
			got := fmt.Sprintf("%+.2f ms (%s vs %s)", o, fmtMs(d.Median), fmtMs(lib.Median))
			if f, _ := rs.find("daemon", daemonRTCase, daemonRTFloor); f != nil {
				got += fmt.Sprintf("; net/http floor %+.2f ms", f.Median-lib.Median)
			}
			check(name, want, o <= 1, got)
		}
	}
	// 9. Daemon throughput against the library's, 8 concurrent callers.
	{
		name, want := "daemon throughput, 8 concurrent clients, vs the library's", ">= 0.85x"
		if r, why := rs.find("daemon", daemonTPCase, daemonTPAPI); r == nil {
			missing(name, want, why)
		} else {
			check(name, want, r.Ratio >= 0.85, fmt.Sprintf("%.2fx (%.0f/s vs %.0f/s)", r.Ratio, r.Median, r.Median/r.Ratio))
		}
	}
	// 10. Daemon RSS at 1000 runs (quick mode fills fewer).
	{
		name, want := "daemon RSS at 1000 runs x 1 worker", "< 30 MiB"
		if r, why := rs.find("daemon", daemonRSSCase, daemonScaleRow(1000)); r == nil {
			missing(name, want, why)
		} else {
			check(name, want, r.Median < 30, fmt.Sprintf("%.1f MiB", r.Median))
		}
	}
	// 11. GET /v1/status flat in the number of runs.
	{
		name, want := "GET /v1/status at 1000 runs vs 1 run (flat)", "<= 1.5x"
		if r, why := rs.find("daemon", daemonStatus, daemonScaleRow(1000)); r == nil {
			missing(name, want, why)
		} else {
			check(name, want, r.Ratio <= 1.5, fmt.Sprintf("%.2fx (%s vs %s)", r.Ratio, fmtMs(r.Median), fmtMs(r.Median/r.Ratio)))
		}
	}
	return out
}
