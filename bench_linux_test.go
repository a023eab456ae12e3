//go:build linux

package snakepit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/runid"
)

// These benchmarks measure each target against a baseline in the same run,
// interleaving the two so machine noise hits both alike, and report medians
// and their ratio (the figure the targets are stated in). Run with e.g.
//
//	go test -run '^$' -bench 'Spawn|Teardown' -benchtime 200x .

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(b *testing.B, base, ours []time.Duration, baseName, oursName string) {
	mb, mo := median(base), median(ours)
	b.ReportMetric(float64(mb.Microseconds()), baseName+"-us")
	b.ReportMetric(float64(mo.Microseconds()), oursName+"-us")
	b.ReportMetric(float64(mo)/float64(mb), "ratio")
	b.ReportMetric(0, "ns/op") // the per-op wall time mixes both sides; meaningless
}

// BenchmarkSpawn: /bin/true via plain os/exec vs through a run (new process
// group, Pdeathsig from the spawner thread, clone3 into the run cgroup,
// pidfd), start to reaped.
func BenchmarkSpawn(b *testing.B) {
	r := newTestRun(b, Options{})
	ctx := context.Background()
	var base, ours []time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(t0))

		t0 = time.Now()
		w, err := r.Start(ctx, Command{Args: []string{"/bin/true"}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(t0))
	}
	report(b, base, ours, "plain", "run")
}

// populate starts n sleepers in r (setsid'd when detach) and waits until all
// are in the cgroup.
func populate(b *testing.B, r *Run, n int, detach bool) {
	b.Helper()
	prog := "sleep 1000 &"
	if detach {
		prog = "setsid sleep 1000 &"
	}
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do %s i=$((i+1)); done; exec sleep 1000", n-1, prog)
	if _, err := r.Start(context.Background(), Command{Args: []string{"sh", "-c", script}}); err != nil {
		b.Fatal(err)
	}
	waitProcs(b, r.Cgroup(), n)
}

// bareKill is the baseline: write cgroup.kill and wait for "populated 0"
// with the same inotify + short re-read wait, nothing else (no report, no
// rmdir). A spinning re-read was tried first and is slower on 2 cores: it
// takes CPU from the kernel work of killing.
func bareKill(b *testing.B, g *cgroup.Group) {
	fd, err := unix.Open(filepath.Join(g.Path(), "cgroup.kill"), unix.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	_, err = unix.Write(fd, []byte("1"))
	unix.Close(fd)
	if err != nil {
		b.Fatal(err)
	}
	if err := g.WaitEmpty(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTeardown: Run.Teardown with grace 0 (cgroup.kill, wait until
// empty, rmdir) vs bare cgroup.kill + spin-wait, N processes, flat and
// setsid'd.
func BenchmarkTeardown(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, detach := range []bool{false, true} {
			name := fmt.Sprintf("N=%d/flat", n)
			if detach {
				name = fmt.Sprintf("N=%d/setsid", n)
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				var base, ours []time.Duration
				for i := 0; i < b.N; i++ {
					rb := newTestRun(b, Options{})
					populate(b, rb, n, detach)
					t0 := time.Now()
					bareKill(b, rb.Cgroup())
					base = append(base, time.Since(t0))

					ro := newTestRun(b, Options{})
					populate(b, ro, n, detach)
					t0 = time.Now()
					if _, err := ro.Teardown(ctx, 0); err != nil {
						b.Fatal(err)
					}
					ours = append(ours, time.Since(t0))
					if _, err := os.Stat(ro.CgroupPath()); err == nil {
						b.Fatal("cgroup left after teardown")
					}
				}
				report(b, base, ours, "bare", "teardown")
			})
		}
	}
}

// BenchmarkGC: inventory.GC of 1000 stale empty runs (one dead owner, the common
// case: a SIGKILLed supervisor's pool) vs a bare rmdir loop over as many,
// both in this process. Each side gets its own parent, so inventory.GC sees only its
// own runs.
func BenchmarkGC(b *testing.B) {
	testenv.RequireCgroup2(b)
	const n = 1000
	ctx := context.Background()
	def, err := cgroup.DefaultParent()
	if err != nil {
		b.Fatal(err)
	}
	parent := filepath.Join(filepath.Dir(def), "snakepit-bench-gc-"+runid.Generate())
	b.Cleanup(func() {
		for _, sub := range []string{"base", "gc"} {
			p := filepath.Join(parent, sub)
			if runs, err := inventory.ListRunCgroups(p); err == nil {
				for _, path := range runs {
					if g, err := cgroup.Open(path); err == nil {
						_, _ = containment.TeardownGroup(ctx, g, 0)
					}
				}
			}
			_ = unix.Rmdir(p)
		}
		_ = unix.Rmdir(parent)
	})
	helper := exec.Command("/bin/sleep", "100000")
	if err := helper.Start(); err != nil {
		b.Fatal(err)
	}
	owner, err := record.OwnerOf(helper.Process.Pid)
	_ = helper.Process.Kill()
	_ = helper.Wait()
	if err != nil {
		b.Fatal(err)
	}
	mk := func(p string) {
		for i := 0; i < n; i++ {
			r, err := Create(ctx, Options{CgroupParent: p, Owner: owner, NoGuardian: true})
			if err != nil {
				b.Fatal(err)
			}
			r.abandonForTest()
		}
	}
	var base, ours []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		mk(filepath.Join(parent, "base"))
		mk(filepath.Join(parent, "gc"))
		b.StartTimer()
		t0 := time.Now()
		runs, err := inventory.ListRunCgroups(filepath.Join(parent, "base"))
		if err != nil {
			b.Fatal(err)
		}
		for _, path := range runs {
			if err := unix.Rmdir(path); err != nil {
				b.Fatal(err)
			}
		}
		base = append(base, time.Since(t0))
		t0 = time.Now()
		rep, err := inventory.GC(ctx, inventory.GCOptions{Parents: []string{filepath.Join(parent, "gc")}, OnlyParents: true, NoScan: true})
		if err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(t0))
		if len(rep.Items) != n {
			b.Fatalf("GC acted on %d runs, want %d", len(rep.Items), n)
		}
	}
	report(b, base, ours, "rmdir-loop", "gc")
}
