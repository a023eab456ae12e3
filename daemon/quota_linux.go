//go:build linux

package daemon

import (
	"net/http"

	"github.com/snakepit/snakepit/api"
)

// usage is what one UID holds: runs (made or being made) and workers
// (running or being started). --max-runs and --max-workers bound each
// UID's own, so a member cannot use up root's share or another member's.
type usage struct{ runs, workers, exited int }

// maxExitedPerUID bounds the exited workers the daemon remembers for one
// UID across its runs (each run also keeps only its newest --max-workers):
// beyond it, the oldest of the run whose worker just exited are forgotten.
// Their exits were announced as events when they happened.
const maxExitedPerUID = 4096

// exitedOver counts n more remembered exited workers of uid (n may be
// negative) and returns how many it has beyond maxExitedPerUID.
func (d *Daemon) exitedOver(uid, n int) int {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	u.exited += n
	over := u.exited - maxExitedPerUID
	d.putLocked(uid, u)
	return over
}

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
	if u.runs <= 0 && u.workers <= 0 && u.exited <= 0 {
		delete(d.usage, uid)
	}
}

// takeRun counts a run against uid's --max-runs.
func (d *Daemon) takeRun(uid int) *httpError {
	return d.take(uid, func(u *usage) *int { return &u.runs }, d.maxRuns, "runs")
}

func (d *Daemon) releaseRun(uid int) { d.release(uid, func(u *usage) *int { return &u.runs }) }

// takeWorker counts a worker against uid's --max-workers.
func (d *Daemon) takeWorker(uid int) *httpError {
	return d.take(uid, func(u *usage) *int { return &u.workers }, d.maxWorkers, "running workers")
}

func (d *Daemon) releaseWorker(uid int) { d.release(uid, func(u *usage) *int { return &u.workers }) }

// take counts one more of what count selects against uid's limit.
func (d *Daemon) take(uid int, count func(*usage) *int, limit int, what string) *httpError {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	if n := count(u); *n < limit {
		*n++
		return nil
	}
	d.putLocked(uid, u)
	return errf(http.StatusTooManyRequests, api.CodeLimit, "too many %s for uid %d (limit %d per uid)", what, uid, limit)
}

func (d *Daemon) release(uid int, count func(*usage) *int) {
	d.qmu.Lock()
	defer d.qmu.Unlock()
	u := d.usageLocked(uid)
	*count(u)--
	d.putLocked(uid, u)
}
