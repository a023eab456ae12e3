//go:build linux

package daemon

import (
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/cgroups/v3/cgroup2/stats"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/cgroup"
)

// runMetrics reads a run cgroup's statistics through containerd/cgroups'
// cgroup2 manager. The daemon is long-lived, so containerd's package
// initialisation (protobuf, cilium/ebpf) costs it nothing that matters;
// the short-lived CLI processes do not link it (limits_linux.go says why).
// containerd needs group paths relative to the mount and starting with
// "/", and on a hybrid host an explicit mount point.
func runMetrics(cgPath string) (*stats.Metrics, error) {
	m, err := cgroup.FindMount()
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(m.Path, cgPath)
	if err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load("/"+rel, cgroup2.WithMountpoint(m.Path))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", cgPath, err)
	}
	return mgr.Stat()
}

// handleRunStats serves GET /v1/runs/{id}/stats: containerd's Metrics for
// the run cgroup (pids, cpu, memory, memory events, where the host's
// cgroup2 has those controllers; absent ones are omitted).
func (d *Daemon) handleRunStats(w http.ResponseWriter, r *http.Request, p peer) {
	rs := d.runFor(w, r, p)
	if rs == nil {
		return
	}
	mt, err := runMetrics(rs.run.CgroupPath())
	if err != nil {
		writeErr(w, errf(http.StatusInternalServerError, api.CodeInternal, "stats of run %s: %v", rs.run.ID(), err))
		return
	}
	writeJSON(w, http.StatusOK, mt)
}
