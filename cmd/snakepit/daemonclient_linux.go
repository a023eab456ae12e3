//go:build snakepitd

package main

import (
	"context"
	"errors"
	"math"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/client"
	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/record"
)

// When the daemon's socket exists, `snakepit ps` and `snakepit kill` go
// through it: a run the daemon owns is torn down by the daemon (its state
// stays right, and group members may kill their own runs), and ps lists the
// daemon's runs even where the local cgroup view lacks them. Without a
// socket, or for runs the daemon does not know, both act locally.
func init() {
	localPs, localKill := psRuns, killRun
	psRuns = func(ctx context.Context, o inventory.ListOptions) ([]inventory.RunInfo, error) {
		runs, err := localPs(ctx, o)
		if !client.Available("") {
			return runs, err
		}
		d, derr := daemonRuns(ctx)
		if derr != nil {
			// The daemon is down or refuses us: the local view stands.
			return runs, err
		}
		seen := make(map[string]bool, len(runs))
		for _, r := range runs {
			seen[r.ID] = true
		}
		for _, r := range d {
			if !seen[r.ID] {
				runs = append(runs, r)
			}
		}
		return runs, err
	}
	killRun = func(ctx context.Context, id string, grace time.Duration, parents ...string) (snakepit.TeardownReport, error) {
		if client.Available("") {
			rep, err := daemonKill(ctx, id, grace)
			if err == nil || !errors.Is(err, client.ErrNotFound) && !errors.Is(err, client.ErrNoDaemon) {
				return rep, err
			}
		}
		return localKill(ctx, id, grace, parents...)
	}
}

func daemonRuns(ctx context.Context) ([]inventory.RunInfo, error) {
	c := client.New("")
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := c.ListRuns(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]inventory.RunInfo, 0, len(rs))
	for _, r := range rs {
		procs := 0
		for _, w := range r.Workers {
			if w.State == api.WorkerRunning {
				procs++
			}
		}
		out = append(out, inventory.RunInfo{
			ID:          r.ID,
			Mechanism:   record.MechanismCgroup,
			Cgroup:      r.Cgroup,
			OwnerPID:    st.PID,
			OwnerAlive:  true,
			OwnerStatus: "snakepit daemon",
			HasRecord:   true,
			Procs:       procs,
			Created:     r.Created,
			AgeSeconds:  now.Sub(r.Created).Seconds(),
		})
	}
	return out, nil
}

func daemonKill(ctx context.Context, id string, grace time.Duration) (snakepit.TeardownReport, error) {
	c := client.New("")
	defer c.Close()
	// The daemon answers a DELETE within grace + 40 s (docs/API.md); a
	// socket whose server never answers must not hold us for ever.
	limit := grace + 45*time.Second
	switch {
	case grace < 0: // the run's own grace, unknown here: the daemon bounds it (5 min by default)
		limit = 10 * time.Minute
	case limit < grace:
		limit = math.MaxInt64
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	td, err := c.DeleteRun(ctx, id, grace)
	if err != nil {
		return snakepit.TeardownReport{}, err
	}
	rep := snakepit.TeardownReport{
		Terminated:    td.Terminated,
		Killed:        td.Killed,
		KillMechanism: td.KillMechanism,
		Duration:      time.Duration(td.DurationMS * float64(time.Millisecond)),
	}
	if td.Error != "" {
		return rep, errors.New(td.Error)
	}
	return rep, nil
}
