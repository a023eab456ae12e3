//go:build linux

package daemon

import (
	"errors"
	"net/http"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
)

// handleRunStats serves GET /v1/runs/{id}/stats: the run cgroup's usage
// counters, read as `snakepit ps` reads them (limits.ReadStats), so both
// return one stats shape; a counter the host lacks is absent, never 0.
func (d *Daemon) handleRunStats(w http.ResponseWriter, r *http.Request, p peer) {
	rs := d.runFor(w, r, p)
	if rs == nil {
		return
	}
	st, err := rs.run.Stats()
	if errors.Is(err, cgroup.ErrNotExist) {
		// Torn down between the lookup and the read: gone, as a run
		// looked up a moment later is.
		writeErr(w, errNoRun(rs.run.ID()))
		return
	}
	if err != nil {
		writeErr(w, errf(http.StatusInternalServerError, api.CodeInternal, "stats of run %s: %v", rs.run.ID(), err))
		return
	}
	writeJSON(w, http.StatusOK, api.RunStats{ID: rs.run.ID(), Stats: st})
}
