//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/systemd"
)

// scopePrefix names the transient scope of a daemon started outside a
// service: snakepit-daemon-<pid>.scope.
const scopePrefix = "snakepit-daemon"

// chooseLayout decides where runs are created and, under systemd, makes
// sure that place is delegated to us and that we are not in it:
//
//  1. Config.CgroupParent: used as is.
//  2. systemd is PID 1 and our own cgroup is delegated to us (a service or
//     scope with Delegate=yes) with nobody else in it: we move into
//     <own>/supervisor and create runs as its siblings.
//  3. systemd is PID 1 otherwise (started by hand, or from a unit without
//     Delegate=yes): we ask systemd for a transient scope with
//     Delegate=yes holding just us, then proceed as in 2. Creating cgroups
//     in a tree systemd manages without delegation would make two writers.
//  4. No systemd: <cgroup2>/snakepit, the CLI's default parent.
func (d *Daemon) chooseLayout(ctx context.Context) error {
	if p := d.cfg.CgroupParent; p != "" {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("cgroup parent %q: must be an absolute path", p)
		}
		d.parent, d.mode = filepath.Clean(p), ModeConfigured
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
	}
	if !systemd.IsRunning() {
		p, err := cgroup.DefaultParent()
		if err != nil {
			return err
		}
		d.parent, d.mode = p, ModeDefault
		return nil
	}
	own, err := systemd.OwnCgroup()
	if err == nil {
		_, derr := systemd.CheckDelegated(own)
		switch {
		case derr != nil:
			d.log.Info("own cgroup not usable", "cgroup", own, "reason", derr)
		case !aloneIn(own):
			d.log.Info("own cgroup is delegated but shared with other processes", "cgroup", own)
		default:
			return d.useDelegated(own, ModeDelegated)
		}
	} else {
		d.log.Info("own cgroup unknown", "err", err)
	}
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

// aloneIn reports whether we are the only process in cgroup path.
func aloneIn(path string) bool {
	g, err := cgroup.Open(path)
	if err != nil {
		return false
	}
	pids, err := g.Procs()
	return err == nil && len(pids) == 1 && pids[0] == os.Getpid()
}
