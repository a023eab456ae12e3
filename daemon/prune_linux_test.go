package daemon

import (
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
