//go:build linux

package pidns

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/runid"
)

// SelfExe names the running binary; the default InitPath.
const SelfExe = "/proc/self/exe"

// Options say how Wrap starts the init.
type Options struct {
	// InitPath is a binary that implements the hidden __init subcommand
	// (the snakepit binary); empty means SelfExe, which is right for the
	// snakepit CLI and for programs that call Main from their own main.
	InitPath string
	// RunID, if set, is put on the init's command line as
	// --snakepit-run-id, so a /proc scan recognises the init even if its
	// environment is unreadable.
	RunID string
	// Grace is how long the init waits, after the command exits and the rest
	// of the namespace got SIGTERM, before it exits (and the kernel SIGKILLs
	// whatever is left). Zero exits at once.
	Grace time.Duration
	// UserNS also makes a user namespace, mapping the caller's uid and gid
	// to themselves and giving the init CAP_SYS_ADMIN there (ambient) so it
	// can mount /proc; the init drops it before starting the command. Needed
	// when the caller is not root. UserNSNeeded says when.
	UserNS bool
	// JobControl, if set, is the init's end of a job-control socket
	// (SOCK_SEQPACKET) for a command that gets the terminal: the init
	// writes jobctl.MsgStopped when the command was stopped from it, and
	// continues it on jobctl.MsgContinue (jobs_linux.go). Not passed on
	// to the command.
	JobControl *os.File
}

// UserNSNeeded reports whether Wrap needs a user namespace in this process:
// without root, CLONE_NEWPID and CLONE_NEWNS are refused (EPERM) outside one.
func UserNSNeeded() bool { return os.Geteuid() != 0 }

// Wrap rewrites cmd (not yet started) to run through the init in a new PID
// and mount namespace. cmd keeps its environment, directory, stdio, extra
// files and SysProcAttr (Setpgid, Pdeathsig, cgroup placement, ...); only
// Path, Args and the namespace fields change, and a Credential moves from
// the init to the command (the init needs our privileges to mount /proc). A LookPath error already in
// cmd.Err is kept, so Start fails exactly as it would have without Wrap.
func Wrap(cmd *exec.Cmd, o Options) {
	initPath := o.InitPath
	if initPath == "" {
		initPath = SelfExe
	}
	args := []string{"snakepit", Subcommand}
	if o.RunID != "" {
		args = append(args, runid.Flag, o.RunID)
	}
	args = append(args,
		"--grace", o.Grace.String(),
		"--mount-proc",
		"--fds", strconv.Itoa(len(cmd.ExtraFiles)))
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	a := cmd.SysProcAttr
	if c := a.Credential; c != nil && !o.UserNS {
		// The init keeps our identity (it needs CAP_SYS_ADMIN to mount
		// /proc); the command gets the credential.
		groups := make([]string, len(c.Groups))
		for i, g := range c.Groups {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		args = append(args, "--uid", strconv.FormatUint(uint64(c.Uid), 10), "--gid", strconv.FormatUint(uint64(c.Gid), 10),
			"--groups", strings.Join(groups, ","))
		if c.NoSetGroups {
			args = append(args, "--no-setgroups")
		}
		a.Credential = nil
		// The directory goes with the credential: entered by the init,
		// as root, it let the command start where its user may not go.
		if cmd.Dir != "" {
			args = append(args, "--dir", cmd.Dir)
			cmd.Dir = ""
		}
	}
	if o.JobControl != nil {
		args = append(args, "--job-fd", strconv.Itoa(3+len(cmd.ExtraFiles)))
		cmd.ExtraFiles = append(cmd.ExtraFiles, o.JobControl)
	}
	args = append(args, "--path", cmd.Path, "--")
	cmd.Args = append(args, cmd.Args...)
	cmd.Path = initPath

	a.Cloneflags |= unix.CLONE_NEWPID | unix.CLONE_NEWNS
	if o.UserNS {
		a.Cloneflags |= unix.CLONE_NEWUSER
		uid, gid := os.Geteuid(), os.Getegid()
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		a.GidMappingsEnableSetgroups = false
		a.AmbientCaps = append(a.AmbientCaps, unix.CAP_SYS_ADMIN)
	}
}
