//go:build linux

package daemon

import (
	"net/http"

	"github.com/snakepit/snakepit/api"
)

// usage is what one UID holds: runs (made or being made) and workers
// (running or being started). --max-runs and --max-workers bound each
// UID's own, so a member cannot use up root's share or another member's.
type usage struct{ runs, workers int }

func (d *Daemon) usageLocked(uid int) *usage {
	u := d.usage[uid]
	if u == nil {
		u = &usage{}
		d.usage[uid] = u
	}
	return u
}

// putLocked forgets a UID that holds nothing.
func (d *Daemon) putLocked(uid int, u *usage) {
	if u.runs <= 0 && u.workers <= 0 {
		delete(d.usage, uid)
	}
}

// takeRun counts a run against uid's --max-runs.
func (d *Daemon) takeRun(uid int) *httpError {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	if u.runs >= d.maxRuns {
		d.putLocked(uid, u)
		return errf(http.StatusTooManyRequests, api.CodeLimit, "too many runs for uid %d (limit %d per uid)", uid, d.maxRuns)
	}
	u.runs++
	return nil
}

func (d *Daemon) releaseRun(uid int) {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	u.runs--
	d.putLocked(uid, u)
}

// takeWorker counts a worker against uid's --max-workers.
func (d *Daemon) takeWorker(uid int) *httpError {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	if u.workers >= d.maxWorkers {
		d.putLocked(uid, u)
		return errf(http.StatusTooManyRequests, api.CodeLimit, "too many running workers for uid %d (limit %d per uid)", uid, d.maxWorkers)
	}
	u.workers++
	return nil
}

func (d *Daemon) releaseWorker(uid int) {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	u.workers--
	d.putLocked(uid, u)
}
