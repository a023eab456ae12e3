//go:build linux

package placement

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/systemd"
)

// Mode is how runs are placed.
type Mode string

// The placements, in the order Decide considers them.
const (
	Configured Mode = "configured"
	Default    Mode = "default"
	Delegated  Mode = "delegated"
	Scope      Mode = "scope"
)

// ErrNoScope means systemd is PID 1, our cgroup is not delegated to us,
// and systemd did not give the run a transient scope (for a user: no
// user manager to ask). Nothing was made outside a delegated subtree.
var ErrNoScope = errors.New("no delegated cgroup and no transient scope from systemd")

// HolderLeaf is the leaf of a run's scope that holds the scope's holder
// process, beside the run cgroup.
const HolderLeaf = "holder"

// Request is what the caller asks for.
type Request struct {
	// Parent, when set, is used as is (Configured).
	Parent string
	// NoSystemd keeps the Default placement under systemd too.
	NoSystemd bool
	// Slice places run scopes; empty means the caller's own slice.
	Slice string
	// Properties are further properties of each run scope.
	Properties []systemd.Property
	// RequireAlone: our delegated cgroup counts only when nobody else is
	// in it (the daemon, which would otherwise move strangers).
	RequireAlone bool
}

// Plan is a placement decided but not yet acted on.
type Plan struct {
	Mode Mode
	// Parent is where snakepit-<id> is made (every mode but Scope, whose
	// parent is each run's own scope).
	Parent string
	// Unit is the systemd unit we run in ("" without systemd).
	Unit string
	// Slice is where run scopes go (Scope).
	Slice string
	// User: run scopes are asked of the user's manager (Scope, non-root).
	User bool
	// Reason says, in one line, why this mode.
	Reason string

	req Request
}

// Decide chooses the placement for req without changing anything.
func Decide(req Request) (Plan, error) {
	p := Plan{req: req}
	if req.Parent != "" {
		if !filepath.IsAbs(req.Parent) {
			return p, fmt.Errorf("cgroup parent %q: must be an absolute path", req.Parent)
		}
		p.Mode, p.Parent, p.Reason = Configured, filepath.Clean(req.Parent), "the parent was given (--cgroup-parent)"
		return p, nil
	}
	def := func(why string) (Plan, error) {
		d, err := cgroup.DefaultParent()
		p.Mode, p.Parent, p.Reason = Default, d, why
		return p, err
	}
	if !systemd.IsRunning() {
		return def("systemd is not PID 1")
	}
	if req.NoSystemd {
		return def("systemd placement turned off (--no-systemd)")
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return p, err
	}
	own, err := systemd.OwnCgroup()
	if err != nil {
		// Outside our cgroup namespace's root (entered by setns): no unit
		// of ours to use or bind to, but systemd can still give a scope.
		p.Mode, p.User = Scope, os.Geteuid() != 0
		p.Slice = req.Slice
		p.Reason = fmt.Sprintf("own cgroup unknown (%v): a transient scope per run", err)
		return p, nil
	}
	rel := strings.TrimPrefix(own, m.Path)
	p.Unit, p.Slice = systemd.UnitOf(rel)
	p.User = os.Geteuid() != 0
	if p.User {
		// The user's manager names its units below user@UID.service.
		if _, after, ok := strings.Cut(rel, "/user@"+fmt.Sprint(os.Geteuid())+".service"); ok {
			p.Unit, p.Slice = systemd.UnitOf(after)
		}
	}
	root := own
	if filepath.Base(own) == systemd.SupervisorLeaf {
		// Moved into the leaf already (an earlier run of this process).
		root = filepath.Dir(own)
	}
	_, derr := systemd.CheckDelegated(root)
	switch {
	case derr == nil && req.RequireAlone && !aloneIn(own):
		p.Reason = fmt.Sprintf("%s is delegated but shared with other processes", p.Unit)
	case derr == nil:
		p.Mode, p.Parent = Delegated, root
		p.Reason = fmt.Sprintf("%s is delegated to us (Delegate=yes)", unitOr(p.Unit, root))
		return p, nil
	default:
		p.Reason = fmt.Sprintf("%s is not delegated to us (%v)", unitOr(p.Unit, root), derr)
	}
	p.Mode = Scope
	if req.Slice != "" {
		p.Slice = req.Slice
	}
	p.Reason += ": a transient scope per run"
	return p, nil
}

func unitOr(unit, path string) string {
	if unit != "" {
		return unit
	}
	return path
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

// ScopeName is the transient scope of run id.
func ScopeName(id string) string { return cgroup.Prefix + id + ".scope" }

// delegated is our delegated cgroup, laid out once per process.
var delegated struct {
	sync.Mutex
	root string
	lay  systemd.Layout
}

// Layout moves us into a leaf of the delegated root (once per process)
// and returns the layout. Delegated plans only.
func (p Plan) Layout() (systemd.Layout, error) {
	if p.Mode != Delegated {
		return systemd.Layout{}, fmt.Errorf("placement: Layout of a %s plan", p.Mode)
	}
	delegated.Lock()
	defer delegated.Unlock()
	if delegated.root == p.Parent {
		return delegated.lay, nil
	}
	lay, err := systemd.MoveToLeaf(p.Parent)
	if err != nil {
		return lay, err
	}
	delegated.root, delegated.lay = p.Parent, lay
	return lay, nil
}

// Options configure Prepare.
type Options struct {
	// Reaper, if set, is the caller's wait4(-1) owner: a holder process
	// is started under it.
	Reaper *reaper.Reaper
}

// Prepare makes the place of run id ready and returns the parent its
// cgroup snakepit-<id> is to be made in: nothing for Configured and
// Default; the leaf layout for Delegated; for Scope the run's own
// transient scope. Prepare of a Scope plan must be undone with
// ReleaseScope when the run is not made after all.
func (p Plan) Prepare(ctx context.Context, id string, o Options) (string, error) {
	switch p.Mode {
	case Configured, Default:
		return p.Parent, nil
	case Delegated:
		if _, err := p.Layout(); err != nil {
			return "", err
		}
		return p.Parent, nil
	case Scope:
		return p.startScope(ctx, id, o)
	}
	return "", fmt.Errorf("placement: unknown mode %q", p.Mode)
}

func (p Plan) startScope(ctx context.Context, id string, o Options) (string, error) {
	if err := runid.Validate(id); err != nil {
		return "", err
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return "", err
	}
	h, err := startHolder(o.Reaper)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoScope, err)
	}
	name := ScopeName(id)
	so := systemd.ScopeOptions{
		Description: "snakepit run " + id,
		Slice:       p.Slice,
		Delegate:    true,
		Properties:  p.req.Properties,
		User:        p.User,
	}
	if strings.HasSuffix(p.Unit, ".service") || strings.HasSuffix(p.Unit, ".scope") {
		// Stopping or killing the owner's unit stops the run's scope:
		// systemd is a backstop beside the guardian.
		so.BindsTo = []string{p.Unit}
	}
	rel, err := systemd.StartTransientScope(ctx, name, []int{h.pid}, so)
	if err != nil {
		h.kill()
		return "", fmt.Errorf("%w: %w", ErrNoScope, err)
	}
	scope := filepath.Join(m.Path, rel)
	// The holder moves to its leaf so that the scope itself holds no
	// process: the run cgroup beside it may then get controllers.
	if err := os.Mkdir(filepath.Join(scope, HolderLeaf), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		h.kill()
		return "", fmt.Errorf("scope %s: %w", name, err)
	}
	if err := cgroup.At(filepath.Join(scope, HolderLeaf)).Move(h.pid); err != nil {
		h.kill()
		return "", fmt.Errorf("scope %s: move holder: %w", name, err)
	}
	systemd.EnableControllers(scope)
	return scope, nil
}

type holder struct{ pid int }

// startHolder starts the process that keeps a run's scope alive: sleep,
// in its own session, stdio on /dev/null, outliving us if we die (the
// guardian or systemd ends it with the scope).
func startHolder(rp *reaper.Reaper) (holder, error) {
	bin := "/bin/sleep"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("sleep"); err != nil {
			return holder{}, fmt.Errorf("scope holder: %w", err)
		}
	}
	cmd := exec.Command(bin, "2147483647")
	cmd.Dir = "/"
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	pid, err := reaper.StartDetached(rp, cmd)
	if err != nil {
		return holder{}, fmt.Errorf("scope holder: %w", err)
	}
	return holder{pid}, nil
}

func (h holder) kill() {
	if h.pid > 0 {
		_ = syscall.Kill(h.pid, syscall.SIGKILL)
	}
}

// ReleaseScope ends the transient scope around the run cgroup runPath, if
// it is in one (its parent is snakepit-<id>.scope): it kills what is left
// in the scope (the holder). It does not wait: systemd finds the scope
// empty, stops it and removes its cgroup, the holder leaf included (a
// unit's cgroup is trimmed recursively). A run outside a scope is left
// alone. Called once the run cgroup is gone.
func ReleaseScope(ctx context.Context, runPath string) error {
	id, ok := strings.CutPrefix(filepath.Base(runPath), cgroup.Prefix)
	scope := filepath.Dir(runPath)
	if !ok || filepath.Base(scope) != ScopeName(id) {
		return nil
	}
	g := cgroup.At(scope)
	if _, err := g.Kill(ctx); err != nil {
		if errors.Is(err, cgroup.ErrNotExist) {
			return nil // systemd collected it already
		}
		return fmt.Errorf("release scope %s: %w", ScopeName(id), err)
	}
	return nil
}
