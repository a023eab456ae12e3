package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestRotateCoversEveryPosition(t *testing.T) {
	const n = 4
	seen := map[[2]int]bool{}
	for i := 0; i < n; i++ {
		for pos, k := range rotate(n, i) {
			seen[[2]int{k, pos}] = true
		}
	}
	if len(seen) != n*n {
		t.Fatalf("each method should take each position once in %d repetitions: %v", n, seen)
	}
}

func TestRunCaseInterleavesAndSkipsWarmup(t *testing.T) {
	var order []string
	mk := func(name string, v float64) method {
		return method{name, func(int) (float64, map[string]float64, error) {
			order = append(order, name)
			return v, map[string]float64{"x": v}, nil
		}}
	}
	ss, err := runCase(context.Background(), 3, 1, []method{mk("a", 1), mk("b", 2)})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ""); got != "abbaabba" {
		t.Errorf("order %q", got)
	}
	if len(ss[0].samples) != 3 || ss[1].extra["x_median"] != 2 {
		t.Errorf("series %+v", ss)
	}
	rs := caseResults("g", "c", "ms", ss[0], ss[1])
	if rs[0].Ratio != 1 || rs[1].Ratio != 2 || rs[1].Baseline != "a" {
		t.Errorf("rows %+v", rs)
	}
}

func TestTargets(t *testing.T) {
	row := func(group, cas, method string, med, ratio float64) Result {
		return Result{Group: group, Case: cas, Method: method, Unit: "ms", Median: med, Ratio: ratio, Baseline: "base", Count: 1}
	}
	rs := resultSet{
		row("spawn", spawnCase, spawnLib, 1.04, 1.04),
		row("spawn", spawnCase, spawnCLI, 4, 5),
		row("spawn", spawnCase, spawnBwrap, 3, 3.75),
		row("teardown", "N=10 flat", tdSnakepit, 1, 1.05),
		row("teardown", "N=100 flat", tdSnakepit, 10, 1.1),
		row("teardown", "N=100 flat", tdPOSIX, 20, 2.2),
		{Group: "daemon", Case: daemonRTCase, Method: daemonRTLib, Median: 3, Ratio: 1},
		row("daemon", daemonRTCase, daemonRTAPI, 4, 1.33),
		row("daemon", daemonTPCase, daemonTPAPI, 400, 0.8),
		row("daemon", daemonRSSCase, daemonScaleRow(1000), 27, 2.5),
		row("daemon", daemonStatus, daemonScaleRow(200), 0.3, 1),
	}
	got := map[string]string{}
	for _, tg := range evalTargets(rs) {
		got[tg.Name] = tg.Status
	}
	want := map[string]string{
		"spawn overhead: library vs plain os/exec":                                Pass,
		"`snakepit run -- /bin/true` (whole process, guardian included) vs bwrap": Fail, // 4 vs 3 ms: 1.33x
		"teardown flat, N=10: snakepit vs bare cgroup.kill+wait+rmdir":            Pass,
		"teardown flat, N=100: snakepit vs bare cgroup.kill+wait+rmdir":           Pass,
		"teardown flat, N=1000: snakepit vs bare cgroup.kill+wait+rmdir":          NotMeasured,
		"teardown setsid, N=10: snakepit vs bare cgroup.kill+wait+rmdir":          NotMeasured,
		"daemon round trip overhead over the library call":                        Pass, // +1 ms
		"daemon throughput, 8 concurrent clients, vs the library's":               Fail,
		"daemon RSS at 1000 runs x 1 worker":                                      Pass,
		"GET /v1/status at 1000 runs vs 1 run (flat)":                             NotMeasured, // quick mode: 200
		"guardian: SIGKILL of the supervisor to all gone vs bare kill, N=100":     NotMeasured,
	}
	for name, st := range want {
		if got[name] != st {
			t.Errorf("%s: %q, want %q (all: %v)", name, got[name], st, got)
		}
	}
}

func TestSpliceDocs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "B.md")
	if err := os.WriteFile(p, []byte("# T\n\nintro\n\n"+docsBegin+"\nold\n"+docsEnd+"\ntail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := spliceDocs(p, "NEW\n"); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	s := string(b)
	if strings.Contains(s, "old") || strings.Count(s, "NEW") != 1 || !strings.HasSuffix(s, docsEnd+"\ntail\n") || !strings.HasPrefix(s, "# T\n\nintro") {
		t.Errorf("spliced page:\n%s", s)
	}
}
