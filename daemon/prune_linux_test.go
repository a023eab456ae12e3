package daemon

import (
	"slices"
	"strings"
	"testing"

	"github.com/snakepit/snakepit/api"
)

// The oldest exited workers go first; running ones always stay, in order.
func TestPruneExited(t *testing.T) {
	exited := &api.Exit{}
	ws := make([]*workerState, 6)
	for i := range ws {
		ws[i] = &workerState{argv: []string{string(rune('a' + i))}}
	}
	// a, c, d, f exited; b, e running.
	for _, i := range []int{0, 2, 3, 5} {
		ws[i].exit = exited
	}
	rs := &runState{workers: append([]*workerState(nil), ws...), running: 2}
	rs.pruneExitedLocked(4)
	if len(rs.workers) != 6 {
		t.Fatalf("pruned %d with room for all 4 exited", 6-len(rs.workers))
	}
	rs.pruneExitedLocked(1)
	var got string
	for _, w := range rs.workers {
		got += w.argv[0]
	}
	if got != "bef" {
		t.Errorf("kept %q, want %q (running b, e and the newest exited f)", got, "bef")
	}
}

// An exited worker's argv is kept for the listing only, cut to about
// maxArgvKept bytes.
func TestBoundArgv(t *testing.T) {
	long := strings.Repeat("x", 60000)
	got := boundArgv([]string{"sh", "-c", long, "tail"})
	n := 0
	for _, a := range got {
		n += len(a)
	}
	if len(got) != 3 || got[0] != "sh" || got[1] != "-c" || !strings.HasSuffix(got[2], "...") || n > maxArgvKept+3 {
		t.Fatalf("boundArgv kept %d arguments, %d bytes", len(got), n)
	}
	if short := []string{"true"}; !slices.Equal(boundArgv(short), short) {
		t.Fatal("a short argv was changed")
	}
}

// The exited workers a UID's runs remember are bounded in all: beyond
// maxExitedPerUID, the run whose worker just exited forgets its oldest.
func TestExitedBoundPerUID(t *testing.T) {
	d := &Daemon{maxWorkers: 1024, usage: map[int]*usage{}}
	exited := &api.Exit{}
	// A run with maxExitedPerUID exited workers already counted.
	rs := &runState{owner: 1000}
	for range maxExitedPerUID {
		rs.workers = append(rs.workers, &workerState{exit: exited})
	}
	d.exitedOver(1000, maxExitedPerUID)
	// One more exits.
	rs.workers = append(rs.workers, &workerState{exit: exited})
	d.rememberExitLocked(rs)
	if len(rs.workers) != d.maxWorkers {
		t.Fatalf("the run kept %d exited workers, want %d", len(rs.workers), d.maxWorkers)
	}
	if got := d.usage[1000].exited; got != d.maxWorkers {
		t.Fatalf("the UID counts %d exited workers, want %d", got, d.maxWorkers)
	}
}
