//go:build linux

package jail

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/spec"
)

// Cred is a Credential looked up in the user database.
type Cred struct {
	uid, gid uint32
	groups   []uint32
	env      []string // USER, LOGNAME, HOME for a user from the database
}

// CheckCredential looks c up as Start will, so that a caller can reject an unknown
// user or group (ErrUnknownUser) before it creates anything.
func CheckCredential(c spec.Credential) error {
	_, err := Resolve(c)
	return err
}

// ExecAs replaces the calling process with path (argv, env) running as c,
// as `snakepit exec` does to keep its PID: supplementary groups, GID and
// UID are changed for the whole process, no_new_privs is set (unless
// c.NewPrivileges) on the calling thread, and that thread calls execve.
// For a user from the database, USER, LOGNAME and HOME in env are
// replaced. Join the run's cgroup before: once the identity is dropped
// cgroup.procs may no longer be writable. It returns only on failure,
// after which the process may already have dropped its identity and must
// exit.
func ExecAs(c spec.Credential, path string, argv, env []string) error {
	rc, err := Resolve(c)
	if err != nil {
		return err
	}
	// no_new_privs is per thread, and execve keeps the calling thread's:
	// set it and exec on the same one.
	runtime.LockOSThread()
	if rc != nil {
		env = OverrideEnv(env, rc.env)
		groups := make([]int, len(rc.groups))
		for i, g := range rc.groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := becomeUser(int(rc.uid), int(rc.gid)); err != nil {
			return err
		}
	}
	if !c.NewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
	}
	if err := syscall.Exec(path, argv, env); err != nil {
		return &ExecError{Path: path, Err: err}
	}
	return nil
}

// becomeUser sets the process's GID, then its UID (the syscall package
// applies them to every thread, Go >= 1.16). Its error is an
// *os.SyscallError naming the call that failed.
func becomeUser(uid, gid int) error {
	if err := syscall.Setgid(gid); err != nil {
		return os.NewSyscallError("setgid", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return os.NewSyscallError("setuid", err)
	}
	return nil
}

// ExecError is ExecAs's execve failing, as distinct from the identity
// changes before it: only this one is about the command itself.
type ExecError struct {
	Path string
	Err  error
}

func (e *ExecError) Error() string { return "exec " + e.Path + ": " + e.Err.Error() }
func (e *ExecError) Unwrap() error { return e.Err }

// resolveCredential looks c up. It returns nil when c changes no identity.
// A worker whose identity changes loses the supervisor's capabilities;
// Pdeathsig still covers it because the child sets it after setuid
// (syscall.forkAndExecInChild), and no_new_privs keeps set-user-ID
// binaries from clearing it.
func Resolve(c spec.Credential) (*Cred, error) {
	if c.IsZero() {
		return nil, nil
	}
	rc := &Cred{uid: uint32(syscall.Geteuid()), gid: uint32(syscall.Getegid())}
	var u *user.User
	if c.User != "" {
		var err error
		u, rc.uid, err = lookupUser(c.User)
		if err != nil {
			return nil, err
		}
		if u != nil {
			gid, err := strconv.ParseUint(u.Gid, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("user %q: bad primary GID %q", c.User, u.Gid)
			}
			rc.gid = uint32(gid)
			rc.env = []string{"USER=" + u.Username, "LOGNAME=" + u.Username, "HOME=" + u.HomeDir}
		} else {
			rc.gid = rc.uid // a bare UID: its own GID, never root's group by accident
		}
	}
	if c.Group != "" {
		gid, err := lookupGroup(c.Group)
		if err != nil {
			return nil, err
		}
		rc.gid = gid
	}
	switch {
	case c.Groups != nil:
		for _, g := range c.Groups {
			gid, err := lookupGroup(g)
			if err != nil {
				return nil, err
			}
			rc.groups = append(rc.groups, gid)
		}
	case u != nil:
		ids, err := u.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("supplementary groups of %q: %w", u.Username, err)
		}
		for _, s := range ids {
			gid, err := strconv.ParseUint(s, 10, 32)
			if err == nil {
				rc.groups = append(rc.groups, uint32(gid))
			}
		}
	}
	return rc, nil
}

// lookupUser resolves a user name or numeric UID. A numeric UID without a
// database entry is allowed (u is nil).
func lookupUser(s string) (*user.User, uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		u, err := user.LookupId(s)
		var unknown user.UnknownUserIdError
		if errors.As(err, &unknown) {
			return nil, uint32(n), nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("user %s: %w", s, err)
		}
		return u, uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, 0, fmt.Errorf("%w: user %q is not in the user database (give a numeric UID to use one without an entry)", ErrUnknownUser, s)
		}
		return nil, 0, fmt.Errorf("user %q: %w", s, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, 0, fmt.Errorf("user %q: bad UID %q", s, u.Uid)
	}
	return u, uint32(uid), nil
}

// lookupGroup resolves a group name or numeric GID.
func lookupGroup(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, fmt.Errorf("%w: group %q is not in the group database", ErrUnknownUser, s)
		}
		return 0, fmt.Errorf("group %q: %w", s, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q: bad GID %q", s, g.Gid)
	}
	return uint32(n), nil
}

// sysProcCredential is the credential for exec.Cmd.SysProcAttr.
func (rc *Cred) SysProcCredential() *syscall.Credential {
	return &syscall.Credential{Uid: rc.uid, Gid: rc.gid, Groups: rc.groups}
}

// UID is the user ID the worker runs as.
func (rc *Cred) UID() int { return int(rc.uid) }

// GID is the group ID the worker runs as.
func (rc *Cred) GID() int { return int(rc.gid) }

// Env is USER, LOGNAME and HOME for a user from the database.
func (rc *Cred) Env() []string { return rc.env }

// Groups are the supplementary groups the worker gets.
func (rc *Cred) Groups() []int {
	out := make([]int, len(rc.groups))
	for i, g := range rc.groups {
		out[i] = int(g)
	}
	return out
}
