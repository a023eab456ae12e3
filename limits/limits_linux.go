//go:build linux

package limits

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/kfile"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/spec"
)

// Limits are applied in two phases so that a run whose limits cannot work
// fails before anything is created:
//
//  1. PlanFor (before the run cgroup exists) works out which
//     controllers the limits need, and for each one which cgroups between
//     the cgroup2 root and the run's parent must get "+ctrl" in their
//     cgroup.subtree_control. It only reads. A controller that cannot be
//     had (bound to a v1 hierarchy, not delegated, blocked by the
//     no-internal-processes rule) is a *ControllerError, or a warning
//     under BestEffort.
//  2. apply (after the run cgroup is made, before any worker starts)
//     enables the controllers top-down and writes the values straight
//     into the interface files (memory.max, pids.max, cpu.max, ...).
//
// containerd/cgroups/v3 cgroup2 wrote the values at first and was
// replaced: importing it links protobuf and cilium/ebpf, whose package
// initialisers run in every snakepit process (the run wrapper, each
// guardian) and cost more than the whole start of a wrapped command.
// Its ToggleControllers also writes every ancestor's subtree_control from
// the mount root down keeping only the last error, and its Memory.Max
// writes "-1" where the kernel wants "max"; its Stat reads 0 for a
// missing file, so it cannot say "not available" (ReadStats can).

// enableStep adds controllers to one cgroup's subtree_control.
type enableStep struct {
	dir   string
	ctrls []string
}

// Plan is the outcome of PlanFor: what to enable and write.
type Plan struct {
	mount    cgroup.Mount
	limits   spec.Limits // with the unavailable settings removed (BestEffort)
	steps    []enableStep
	oomGroup bool
	// optional controllers (accounting for stats and oom.group) whose
	// enabling may fail without consequence.
	optional map[string]bool
	warnings []error
}

// Need is a controller a limit needs, and the flag that needs it.
type Need struct{ Ctrl, Why string }

// Needs lists the controllers l needs and which flag needs each.
func Needs(l spec.Limits) []Need {
	var out []Need
	add := func(c, why string) { out = append(out, Need{c, why}) }
	switch {
	case l.MemoryMax != 0:
		add("memory", "--memory-max")
	case l.MemoryHigh != 0:
		add("memory", "--memory-high")
	case l.OOMGroup != nil && *l.OOMGroup:
		add("memory", "--oom-group")
	}
	if l.PidsMax != 0 {
		add("pids", "--pids-max")
	}
	switch {
	case !l.CPUMax.IsZero():
		add("cpu", "--cpu-max")
	case l.CPUWeight != 0:
		add("cpu", "--cpu-weight")
	}
	return out
}

// PlanFor plans the controllers for a run cgroup to be made under
// parent. Nothing is written.
func PlanFor(parent string, l spec.Limits) (*Plan, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return nil, err
	}
	p := &Plan{mount: m, limits: l, optional: map[string]bool{}}
	chain, err := cgroupChain(m.Path, parent)
	if err != nil {
		return nil, err
	}
	steps := map[string][]string{}
	add := func(s []enableStep) {
		for _, st := range s {
			steps[st.dir] = append(steps[st.dir], st.ctrls...)
		}
	}
	got := map[string]bool{}
	for _, n := range Needs(l) { // at most one entry per controller
		s, reason := planController(m, chain, n.Ctrl)
		if reason != "" {
			cerr := &ControllerError{Controller: n.Ctrl, Needed: n.Why, Reason: reason}
			if !l.BestEffort {
				return nil, cerr
			}
			p.warnings = append(p.warnings, cerr)
			p.limits = withoutController(p.limits, n.Ctrl)
			continue
		}
		got[n.Ctrl] = true
		add(s)
	}
	// Accounting that costs nothing to ask for: memory (memory.current and
	// the default memory.oom.group) and pids (pids.current), as systemd
	// turns on MemoryAccounting and TasksAccounting by default. They are
	// planned only where they can be had without an error, and a failure
	// to enable them later is ignored.
	// One read of the root's controllers settles the common hybrid case
	// (neither on cgroup2) without walking the chain and explaining why,
	// which is only worth its reads when a limit asked for the controller.
	rootCtrls := readFields(filepath.Join(m.Path, "cgroup.controllers"))
	for _, c := range []string{"memory", "pids"} {
		if got[c] || !has(rootCtrls, c) {
			continue
		}
		// Never above the parent: enabling a controller in an ancestor
		// only for accounting would change the rules for that ancestor's
		// processes (no-internal-processes).
		if s, reason := planController(m, chain, c); reason == "" && !touchesAbove(s, parent) {
			p.optional[c] = true
			got[c] = true
			add(s)
		}
	}
	for _, dir := range chain {
		if c := steps[dir]; len(c) > 0 {
			p.steps = append(p.steps, enableStep{dir: dir, ctrls: c})
		}
	}
	p.oomGroup = got["memory"] && (l.OOMGroup == nil || *l.OOMGroup)
	return p, nil
}

// touchesAbove reports whether a step writes to a strict ancestor of
// parent.
func touchesAbove(steps []enableStep, parent string) bool {
	parent = filepath.Clean(parent)
	for _, st := range steps {
		if len(st.dir) < len(parent) {
			return true
		}
	}
	return false
}

func withoutController(l spec.Limits, ctrl string) spec.Limits {
	switch ctrl {
	case "memory":
		l.MemoryMax, l.MemoryHigh, l.OOMGroup = 0, 0, nil
	case "pids":
		l.PidsMax = 0
	case "cpu":
		l.CPUMax, l.CPUWeight = spec.CPUMax{}, 0
	}
	return l
}

// cgroupChain returns the cgroup directories from the mount root down to
// parent, inclusive.
func cgroupChain(root, parent string) ([]string, error) {
	rel, err := filepath.Rel(root, filepath.Clean(parent))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("cgroup parent %s is not under the cgroup2 mount %s", parent, root)
	}
	chain := []string{root}
	if rel == "." {
		return chain, nil
	}
	cur := root
	for _, part := range strings.Split(rel, "/") {
		cur = filepath.Join(cur, part)
		chain = append(chain, cur)
	}
	return chain, nil
}

// planController finds which subtree_control files need "+ctrl" for a child
// of chain[len-1] to have ctrl. It returns a reason when that cannot work.
func planController(m cgroup.Mount, chain []string, ctrl string) ([]enableStep, string) {
	// The deepest existing directory; the ones below it are made by
	// cgroup.Create and start with an empty subtree_control.
	e := len(chain) - 1
	for e > 0 {
		if _, err := os.Stat(filepath.Join(chain[e], "cgroup.procs")); err == nil {
			break
		}
		e--
	}
	var steps []enableStep
	for i := len(chain) - 1; i > e; i-- {
		steps = append(steps, enableStep{dir: chain[i], ctrls: []string{ctrl}})
	}
	// Walk up from the deepest existing directory until one already
	// passes ctrl down (it is in its subtree_control) or has it available
	// (cgroup.controllers) so that we can pass it down.
	for i := e; i >= 0; i-- {
		dir := chain[i]
		if has(readFields(filepath.Join(dir, "cgroup.subtree_control")), ctrl) {
			break
		}
		if reason := canEnable(m, dir, ctrl, i == 0); reason != "" {
			return nil, reason
		}
		steps = append(steps, enableStep{dir: dir, ctrls: []string{ctrl}})
		if has(readFields(filepath.Join(dir, "cgroup.controllers")), ctrl) {
			break
		}
		if i == 0 {
			return nil, rootMissingReason(m, ctrl)
		}
	}
	slices.Reverse(steps)
	return steps, ""
}

// canEnable checks that "+ctrl" may be written to dir/cgroup.subtree_control
// (apart from the controller being available there).
func canEnable(m cgroup.Mount, dir, ctrl string, isRoot bool) string {
	sc := filepath.Join(dir, "cgroup.subtree_control")
	if err := unix.Access(sc, unix.W_OK); err != nil {
		return fmt.Sprintf("not delegated: cannot write %s (%v)", sc, err)
	}
	if isRoot {
		return "" // the root cgroup is exempt from the no-internal-processes rule
	}
	if procs := readFields(filepath.Join(dir, "cgroup.procs")); len(procs) > 0 {
		return fmt.Sprintf("not enabled in %s, and that cgroup has processes (%d, e.g. PID %s): the no-internal-processes rule forbids enabling it there; move them into a leaf cgroup or choose another --cgroup-parent",
			sc, len(procs), procs[0])
	}
	if t := strings.TrimSpace(string(readAll(filepath.Join(dir, "cgroup.type")))); t == "threaded" {
		return fmt.Sprintf("%s is a threaded cgroup", dir)
	}
	return ""
}

// rootMissingReason explains why the cgroup2 root lacks ctrl.
func rootMissingReason(m cgroup.Mount, ctrl string) string {
	hier, enabled, known := procCgroupsLine(ctrl)
	switch {
	case !known:
		return "not built into this kernel (absent from /proc/cgroups)"
	case !enabled:
		return "disabled in this kernel (cgroup_disable= on the command line; /proc/cgroups enabled=0)"
	case hier != 0:
		where := v1MountOf(ctrl)
		if where != "" {
			where = " mounted at " + where
		}
		host := ""
		if m.Mode == cgroup.Hybrid {
			host = fmt.Sprintf("hybrid host: the cgroup2 mount %s has no %s controller", m.Path, ctrl)
		} else {
			host = fmt.Sprintf("the cgroup2 mount %s cannot have it while v1 holds it", m.Path)
		}
		return fmt.Sprintf("bound to the cgroup v1 hierarchy %d%s (%s)", hier, where, host)
	}
	return fmt.Sprintf("not available in %s/cgroup.controllers (not delegated to this cgroup namespace)", m.Path)
}

// procCgroupsLine reads ctrl's hierarchy ID and enabled flag from
// /proc/cgroups (hierarchy 0 means cgroup2 or unbound).
func procCgroupsLine(ctrl string) (hier int, enabled, known bool) {
	data, err := kfile.ReadAll("/proc/cgroups")
	if err != nil {
		return 0, true, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == ctrl {
			h, _ := strconv.Atoi(f[1])
			return h, f[3] == "1", true
		}
	}
	return 0, true, false
}

// v1MountOf finds where the cgroup v1 hierarchy holding ctrl is mounted.
func v1MountOf(ctrl string) string {
	data, err := kfile.ReadAll("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup" {
			continue
		}
		if slices.Contains(strings.Split(qf[2], ","), ctrl) {
			return pf[4]
		}
	}
	return ""
}

func readAll(p string) []byte {
	b, _ := cgroup.ReadFile(p)
	return b
}

func readFields(p string) []string { return strings.Fields(string(readAll(p))) }

func has(list []string, s string) bool { return slices.Contains(list, s) }

// apply enables the planned controllers and writes the limits into the run
// cgroup g. Nothing has been started in g yet.
func (p *Plan) Apply(g *cgroup.Group) error {
	for _, st := range p.steps {
		if err := enableControllers(st.dir, st.ctrls, p.optional); err != nil {
			return err
		}
	}
	for _, v := range p.values() {
		if err := cgroup.WriteFile(filepath.Join(g.Path(), v.file), v.val); err != nil {
			return fmt.Errorf("set limits on %s: %w", g.Path(), err)
		}
	}
	if p.oomGroup && p.limits.OOMGroup == nil {
		// The default, not asked for: a kernel or setup without it
		// (memory accounting that could not be enabled) is no error.
		_ = cgroup.WriteFile(filepath.Join(g.Path(), "memory.oom.group"), "1")
	}
	return nil
}

// enableControllers writes "+c" for each controller to dir's
// subtree_control, one controller per write so that a failure names it.
// Optional controllers (accounting only) may fail.
func enableControllers(dir string, ctrls []string, optional map[string]bool) error {
	sc := filepath.Join(dir, "cgroup.subtree_control")
	have := readFields(sc)
	for _, c := range ctrls {
		if has(have, c) {
			continue
		}
		err := cgroup.WriteFile(sc, "+"+c)
		if err == nil || optional[c] {
			continue
		}
		reason := err.Error()
		switch {
		case errors.Is(err, unix.EBUSY):
			reason = fmt.Sprintf("cannot enable it in %s: the cgroup has processes (no-internal-processes rule)", sc)
		case errors.Is(err, fs.ErrPermission):
			reason = fmt.Sprintf("not delegated: cannot write %s (%v)", sc, err)
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINVAL):
			reason = fmt.Sprintf("cannot enable it in %s (%v)", sc, err)
		}
		return &ControllerError{Controller: c, Reason: reason}
	}
	return nil
}

// limitValue is one interface file of the run cgroup and what to write.
type limitValue struct{ file, val string }

// values lists the files the planned limits write, in a safe order
// (memory.high before memory.max, so a lowered max never sits under high).
func (p *Plan) values() []limitValue {
	l := p.limits
	num := func(v int64) string {
		if v == spec.LimitMax {
			return "max"
		}
		return strconv.FormatInt(v, 10)
	}
	var out []limitValue
	if l.MemoryHigh != 0 {
		out = append(out, limitValue{"memory.high", num(int64(l.MemoryHigh))})
	}
	if l.MemoryMax != 0 {
		out = append(out, limitValue{"memory.max", num(int64(l.MemoryMax))})
	}
	if p.oomGroup && l.OOMGroup != nil {
		out = append(out, limitValue{"memory.oom.group", "1"})
	}
	if l.PidsMax != 0 {
		out = append(out, limitValue{"pids.max", num(int64(l.PidsMax))})
	}
	if !l.CPUMax.IsZero() {
		out = append(out, limitValue{"cpu.max", l.CPUMax.String()})
	}
	if l.CPUWeight != 0 {
		out = append(out, limitValue{"cpu.weight", strconv.FormatUint(uint64(l.CPUWeight), 10)})
	}
	return out
}

// ReadStats reads the usage counters of a run cgroup (for `snakepit ps`
// and the daemon, which may not own the Run). Fields whose files do not
// exist are nil.
func ReadStats(g *cgroup.Group) (Stats, error) {
	var s Stats
	dir := g.Path()
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return s, fmt.Errorf("%w: %s", cgroup.ErrNotExist, dir)
	}
	s.MemoryCurrent = readUint(filepath.Join(dir, "memory.current"))
	s.MemoryPeak = readUint(filepath.Join(dir, "memory.peak"))
	s.PidsCurrent = readUint(filepath.Join(dir, "pids.current"))
	cpu := readKV(filepath.Join(dir, "cpu.stat"))
	s.CPUUsageUsec = cpu["usage_usec"]
	s.CPUThrottled = cpu["nr_throttled"]
	s.CPUThrottledUsec = cpu["throttled_usec"]
	s.OOMKills = readKV(filepath.Join(dir, "memory.events"))["oom_kill"]
	s.PidsMaxEvents = readKV(filepath.Join(dir, "pids.events"))["max"]
	return s, nil
}

func readUint(p string) *uint64 {
	b, err := cgroup.ReadFile(p)
	if err != nil {
		return nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil
	}
	return &v
}

// readKV parses a flat-keyed cgroup file ("key value" lines).
func readKV(p string) map[string]*uint64 {
	out := map[string]*uint64{}
	b, err := cgroup.ReadFile(p)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = &n
		}
	}
	return out
}

// Probe reports, for each controller a limit can need (memory, pids,
// cpu), whether a run made under parent (DefaultParent when empty) could
// get it, and why not. It writes nothing (for `snakepit doctor`).
func Probe(parent string) (map[string]error, error) {
	if parent == "" {
		p, err := cgroup.DefaultParent()
		if err != nil {
			return nil, err
		}
		parent = p
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return nil, err
	}
	chain, err := cgroupChain(m.Path, parent)
	if err != nil {
		return nil, err
	}
	out := map[string]error{}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, reason := planController(m, chain, c); reason != "" {
			out[c] = &ControllerError{Controller: c, Reason: reason}
		} else {
			out[c] = nil
		}
	}
	return out, nil
}

// Warnings returns the controllers left out under BestEffort (one
// *ControllerError each).
func (p *Plan) Warnings() []error { return p.warnings }
