//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/systemd"
)

// scopePrefix names the transient scope of a daemon started outside a
// service: snakepit-daemon-<pid>.scope.
const scopePrefix = "snakepit-daemon"

// chooseLayout decides where runs are created through placement.Decide,
// the decision the library's Create makes too, and under systemd makes sure
// that place is delegated to us and that we are not in it:
//
//  1. Config.CgroupParent: used as is.
//  2. systemd is PID 1 and our own cgroup is delegated to us (a service or
//     scope with Delegate=yes) with nobody else in it: we move into
//     <own>/supervisor and create runs as its siblings.
//  3. systemd is PID 1 otherwise (started by hand, or from a unit without
//     Delegate=yes): where the library gives each run a scope, the daemon,
//     which outlives its runs, asks systemd for one transient scope with
//     Delegate=yes holding just itself, then proceeds as in 2. Creating
//     cgroups in a tree systemd manages without delegation would make two
//     writers.
//  4. No systemd: <cgroup2>/snakepit, the CLI's default parent.
func (d *Daemon) chooseLayout(ctx context.Context) error {
	plan, err := placement.Decide(placement.Request{Parent: d.cfg.CgroupParent, RequireAlone: true})
	if err != nil {
		return err
	}
	switch plan.Mode {
	case placement.Configured:
		d.parent, d.mode = plan.Parent, ModeConfigured
		if !cgroup.InCgroup2(d.parent) {
			// Checked before anything is made: MkdirAll would create the
			// path on whatever filesystem it names, and every create
			// would then fail.
			return fmt.Errorf("%w: %q is not inside a cgroup2 mount", snakepit.ErrBadParent, d.parent)
		}
		if _, err := os.Stat(d.parent); errors.Is(err, fs.ErrNotExist) {
			d.madeParent = true
		}
		return os.MkdirAll(d.parent, 0o755)
	case placement.Default:
		d.parent, d.mode = plan.Parent, ModeDefault
		return nil
	case placement.Delegated:
		return d.useDelegated(plan.Parent, ModeDelegated)
	}
	d.log.Info("own cgroup not usable", "reason", plan.Reason)
	if d.cfg.NoScope {
		p, err := cgroup.DefaultParent()
		if err != nil {
			return err
		}
		d.parent, d.mode = p, ModeDefault
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	del, err := systemd.EnterTransientScope(sctx, scopePrefix, systemd.ScopeOptions{
		Description: "snakepit daemon (started outside a service)",
		// Timeouts nest: our grace < the scope's stop timeout.
		StopTimeout: d.grace + 20*time.Second,
	})
	if err != nil {
		return fmt.Errorf("no delegated cgroup, and no transient scope with Delegate=yes: %w", err)
	}
	return d.useDelegated(del.Path, ModeScope)
}

func (d *Daemon) useDelegated(root, mode string) error {
	lay, err := systemd.MoveToLeaf(root)
	if err != nil {
		return err
	}
	d.parent, d.mode = root, mode
	d.log.Info("using delegated cgroup", "mode", mode, "root", root, "supervisor", lay.Supervisor, "controllers", lay.Controllers)
	return nil
}
