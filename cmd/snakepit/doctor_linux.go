package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/placement"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
	"github.com/snakepit/snakepit/spawn"
	"github.com/snakepit/snakepit/systemd"
)

func init() {
	register(&command{
		name:     "doctor",
		summary:  "explain what this host supports and which mechanism snakepit will use",
		synopsis: "[--json]",
		exits:    []int{exitPermission, exitNoCgroup2, exitNoKill, exitFailure},
		define: func(fs *flagSet) action {
			var asJSON bool
			fs.Bool("json", 0, "print the checks as JSON", &asJSON)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("doctor: unexpected arguments")
				}
				return cmdDoctor(ctx, asJSON, stdout, stderr)
			}
		},
	})
}

// Check statuses.
const (
	checkOK   = "ok"
	checkWarn = "warn" // works, with a fallback or a limitation
	checkFail = "fail"
	checkInfo = "info"
)

// checkResult is one line of doctor's output.
type checkResult struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// doctorCheck is one check. Add one with addDoctorCheck from an init
// function; checks run in order of registration (file name order across
// files) and share a doctorEnv. The mechanism verdict always comes last.
type doctorCheck struct {
	name string
	run  func(ctx context.Context, env *doctorEnv) (status, detail string)
}

var doctorChecks []doctorCheck

func addDoctorCheck(name string, run func(ctx context.Context, env *doctorEnv) (status, detail string)) {
	doctorChecks = append(doctorChecks, doctorCheck{name, run})
}

// doctorEnv holds what several checks need, probed once: the cgroup2
// mount and a scratch run (a real run, with a record naming us, so gc and
// ps treat it like any live run) that checks may start processes in.
type doctorEnv struct {
	mount    cgroup.Mount
	mountErr error

	scratch    *snakepit.Run
	scratchErr error

	// cgroupUsable is set by the checks that prove the cgroup mechanism:
	// a run can be made, killed, and a process started into it.
	cgroupUsable map[string]bool
	// cause is the first error that makes cgroup mode unusable.
	cause error
}

func (e *doctorEnv) fail(key string, err error) {
	e.cgroupUsable[key] = false
	if e.cause == nil {
		e.cause = err
	}
}

func init() {
	addDoctorCheck("root", func(ctx context.Context, e *doctorEnv) (string, string) {
		if os.Geteuid() == 0 {
			return checkOK, "running as root (euid 0)"
		}
		return checkWarn, fmt.Sprintf("euid %d: cgroup mode needs root or a delegated cgroup subtree", os.Geteuid())
	})
	addDoctorCheck("cgroup2", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.mountErr != nil {
			e.fail("mount", e.mountErr)
			return checkFail, e.mountErr.Error()
		}
		if e.mount.Mode == cgroup.Hybrid {
			return checkOK, fmt.Sprintf("%s (hybrid: cgroup v1 at /sys/fs/cgroup holds the resource controllers)", e.mount.Path)
		}
		return checkOK, fmt.Sprintf("%s (unified)", e.mount.Path)
	})
	addDoctorCheck("own-cgroup", func(ctx context.Context, e *doctorEnv) (string, string) {
		p, err := cgroup.PathOf(0)
		if err != nil {
			return checkWarn, err.Error()
		}
		return checkInfo, fmt.Sprintf("we are in %s", p)
	})
	addDoctorCheck("run-cgroup", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.mountErr != nil {
			return checkFail, "no cgroup2 mount"
		}
		if e.scratchErr != nil {
			e.fail("create", e.scratchErr)
			return checkFail, fmt.Sprintf("cannot create a run cgroup: %v", e.scratchErr)
		}
		return checkOK, fmt.Sprintf("created %s (removed when doctor ends)", e.scratch.CgroupPath())
	})
	addDoctorCheck("records", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.scratch == nil {
			return checkInfo, fmt.Sprintf("no run cgroup; POSIX runs keep records in %s", record.Dir())
		}
		var no []byte
		if _, err := unix.Getxattr(e.scratch.CgroupPath(), record.Xattr, no); err == nil {
			return checkOK, fmt.Sprintf("ownership records as xattr %s on run cgroups", record.Xattr)
		}
		return checkWarn, fmt.Sprintf("no user xattrs on cgroupfs (Linux < 5.7?): records go to %s", record.Dir())
	})
	addDoctorCheck("cgroup.kill", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.scratch == nil {
			return checkFail, "no run cgroup to look in"
		}
		m, err := cgroup.KillMechanismFor(e.scratch.Cgroup())
		switch {
		case err != nil:
			e.fail("kill", err)
			return checkFail, err.Error()
		case m == cgroup.KillCgroupKill:
			return checkOK, "cgroup.kill present (Linux >= 5.14): atomic group kill"
		}
		return checkWarn, "no cgroup.kill (Linux < 5.14): freeze, kill, thaw instead"
	})
	addDoctorCheck("clone-into-cgroup", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.scratch == nil {
			return checkFail, "no run cgroup to start into"
		}
		w, err := e.scratch.Start(ctx, snakepit.Command{Args: []string{"/bin/true"}})
		if err != nil {
			e.fail("spawn", err)
			return checkFail, fmt.Sprintf("cannot start a process in a run: %v", err)
		}
		_, _ = w.Wait(ctx)
		if w.Placement == spawn.PlaceClone3 {
			return checkOK, "clone3(CLONE_INTO_CGROUP) started /bin/true inside a run cgroup"
		}
		return checkWarn, fmt.Sprintf("CLONE_INTO_CGROUP refused; children enter their cgroup by %s (/bin/sh writes cgroup.procs before exec)", w.Placement)
	})
	addDoctorCheck("controllers", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.scratch == nil {
			return checkInfo, "no run cgroup"
		}
		cs, err := e.scratch.Cgroup().Controllers()
		if err != nil {
			return checkWarn, err.Error()
		}
		if len(cs) == 0 {
			why := "the parent enables none in cgroup.subtree_control"
			if e.mount.Mode == cgroup.Hybrid {
				why = "hybrid host: memory, pids, cpu are bound to cgroup v1"
			}
			return checkWarn, "none available to runs (" + why + "): no resource limits"
		}
		return checkOK, strings.Join(cs, " ")
	})
	addDoctorCheck("pidfd", func(ctx context.Context, e *doctorEnv) (string, string) {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			return checkWarn, fmt.Sprintf("pidfd_open: %v (Linux < 5.3): PID + start time checks instead", err)
		}
		defer unix.Close(fd)
		if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
			return checkWarn, fmt.Sprintf("pidfd_send_signal: %v", err)
		}
		return checkOK, "pidfd_open and pidfd_send_signal work"
	})
	addDoctorCheck("placement", func(ctx context.Context, e *doctorEnv) (string, string) {
		p, err := placement.Decide(placement.Request{})
		if err != nil {
			return checkWarn, err.Error()
		}
		switch p.Mode {
		case placement.Delegated:
			return checkOK, fmt.Sprintf("delegated: runs below %s (%s)", p.Parent, p.Reason)
		case placement.Scope:
			mgr := "the system manager"
			if p.User {
				mgr = "the user's manager"
			}
			return checkOK, fmt.Sprintf("scope: each run in a transient snakepit-<runid>.scope (Delegate=yes, in %s, from %s): %s", orDefault(p.Slice, "the default slice"), mgr, p.Reason)
		}
		return checkOK, fmt.Sprintf("%s: runs below %s (%s)", p.Mode, p.Parent, p.Reason)
	})
	addDoctorCheck("guardian", func(ctx context.Context, e *doctorEnv) (string, string) {
		where := ""
		if systemd.IsRunning() {
			where = "; it lives in a scope of its own (snakepit-guardian-<pid>.scope), outside every unit it guards"
		}
		notice := "when the owner's connection closes (no PIDFD_THREAD on this kernel: Linux < 6.9)"
		if guardian.ThreadNotice() {
			notice = "as soon as one of the owner's threads exits in its death (PIDFD_THREAD), before its connection closes"
		}
		if id, err := guardian.Probe(); err == nil {
			return checkOK, fmt.Sprintf("runs register with the guardian service (pid %d at %s): it tears a run down when its owner dies, noticed %s%s", id.PID, guardian.SocketPath(), notice, where)
		}
		if bin, err := guardian.FindBinary(selfBinary()); err == nil {
			return checkOK, fmt.Sprintf("no guardian service runs at %s; the first run starts one from %s (if that fails, each owner gets an exec'd guardian)", guardian.SocketPath(), bin)
		}
		return checkWarn, "no guardian service runs at " + guardian.SocketPath() + " and no snakepit binary can start one: runs would be unguarded"
	})
	addDoctorCheck("subreaper", func(ctx context.Context, e *doctorEnv) (string, string) {
		was, _ := reaper.IsSubreaper()
		if err := reaper.SetSubreaper(); err != nil {
			return checkWarn, fmt.Sprintf("PR_SET_CHILD_SUBREAPER: %v", err)
		}
		on, err := reaper.IsSubreaper()
		if !was {
			_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		}
		if err != nil || !on {
			return checkWarn, "PR_SET_CHILD_SUBREAPER did not stick"
		}
		return checkOK, "PR_SET_CHILD_SUBREAPER works"
	})
	addDoctorCheck("systemd", func(ctx context.Context, e *doctorEnv) (string, string) {
		comm, _ := os.ReadFile("/proc/1/comm")
		pid1 := strings.TrimSpace(string(comm))
		if _, err := os.Stat("/run/systemd/system"); err == nil && pid1 == "systemd" {
			return checkOK, "systemd is PID 1"
		}
		if _, err := os.Stat("/usr/lib/systemd/systemd"); err == nil {
			return checkInfo, fmt.Sprintf("systemd installed but not running as PID 1 (PID 1 is %q): no transient scopes", pid1)
		}
		return checkInfo, fmt.Sprintf("systemd not running (PID 1 is %q)", pid1)
	})
	addDoctorCheck("delegation", func(ctx context.Context, e *doctorEnv) (string, string) {
		if e.mountErr != nil {
			return checkInfo, "no cgroup2 mount"
		}
		own, err := cgroup.PathOf(0)
		if err != nil {
			return checkInfo, err.Error()
		}
		return checkInfo, delegation(filepath.Join(e.mount.Path, own))
	})
}

func (e *doctorEnv) usable() bool {
	for _, ok := range e.cgroupUsable {
		if !ok {
			return false
		}
	}
	return e.mountErr == nil && e.scratch != nil
}

// delegation says whether our cgroup was delegated to us: systemd marks a
// delegated cgroup with the trusted.delegate / user.delegate xattr and
// chowns its files to the delegatee.
func delegation(dir string) string {
	var marks []string
	for _, x := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 16)
		if n, err := unix.Getxattr(dir, x, buf); err == nil {
			marks = append(marks, fmt.Sprintf("%s=%s", x, buf[:n]))
		}
	}
	st, err := os.Stat(filepath.Join(dir, "cgroup.procs"))
	owned := ""
	if err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok && int(s.Uid) == os.Geteuid() && os.Geteuid() != 0 {
			owned = "cgroup.procs is owned by us"
		}
	}
	switch {
	case len(marks) > 0:
		return fmt.Sprintf("%s is delegated (%s)", dir, strings.Join(marks, ", "))
	case owned != "":
		return fmt.Sprintf("%s is delegated (%s)", dir, owned)
	case os.Geteuid() == 0:
		return fmt.Sprintf("%s is not marked delegated; as root we may write it anyway", dir)
	}
	return fmt.Sprintf("%s is not delegated to us", dir)
}

type doctorReport struct {
	Checks       []checkResult `json:"checks"`
	Mechanism    string        `json:"mechanism"`
	CgroupUsable bool          `json:"cgroup_usable"`
}

func cmdDoctor(ctx context.Context, asJSON bool, stdout, stderr io.Writer) error {
	e := &doctorEnv{cgroupUsable: map[string]bool{}}
	e.mount, e.mountErr = cgroup.FindMount()
	if e.mountErr == nil {
		e.scratch, e.scratchErr = snakepit.Create(ctx, snakepit.Options{Mode: snakepit.ModeCgroup, NoGuardian: true}) // probes the cgroup (never the POSIX fallback) where runs are placed; torn down at once, so unguarded
		if e.scratch != nil {
			defer func() {
				tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if _, err := e.scratch.Teardown(tctx, 0); err != nil {
					writeErr(stderr, "doctor: removing scratch run: %v", err)
				}
			}()
		}
	}
	var rep doctorReport
	for _, c := range doctorChecks {
		status, detail := c.run(ctx, e)
		rep.Checks = append(rep.Checks, checkResult{Name: c.name, Status: status, Detail: detail})
	}
	// The verdict is always the last line, after checks added elsewhere.
	rep.CgroupUsable = e.usable()
	rep.Mechanism = record.MechanismPOSIX
	verdict := checkResult{Name: "mechanism", Status: checkWarn,
		Detail: fmt.Sprintf("posix (process groups, run-ID markers, pidfds): cgroup mode unusable: %v", e.cause)}
	if rep.CgroupUsable {
		rep.Mechanism = record.MechanismCgroup
		verdict.Status, verdict.Detail = checkOK, "cgroup: each run gets its own cgroup, killed atomically"
	}
	rep.Checks = append(rep.Checks, verdict)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		for _, c := range rep.Checks {
			fmt.Fprintf(stdout, "%-4s  %-18s %s\n", c.Status, c.Name, c.Detail)
		}
	}
	if rep.CgroupUsable {
		return nil
	}
	cause := e.cause
	if cause == nil {
		cause = errors.New("cgroup mode unusable")
	}
	return codedError{exitCode(cause), fmt.Errorf("doctor: cgroup mode unusable: %w", cause)}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
