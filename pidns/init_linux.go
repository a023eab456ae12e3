//go:build linux

package pidns

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/jobctl"
)

// forwarded are the signals the init passes on to the command. SIGCHLD is
// the init's own; SIGKILL and SIGSTOP cannot be caught.
var forwarded = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGTERM, unix.SIGWINCH, unix.SIGALRM, unix.SIGCONT,
}

// initArgs are the parsed arguments of the __init subcommand.
type initArgs struct {
	grace     time.Duration
	mountProc bool
	fds       int
	jobFD     int // -1: none; else the wrapper's job-control socket (jobs_linux.go)
	path      string
	dir       string // the command's directory, entered with its credential
	argv      []string
	cred      *syscall.Credential
}

func parseArgs(args []string, stderr io.Writer) (initArgs, error) {
	var a initArgs
	fs := flag.NewFlagSet(Subcommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("snakepit-run-id", "", "run ID (a marker for /proc scans; not used otherwise)")
	fs.DurationVar(&a.grace, "grace", 0, "after the command exits: time the rest of the namespace gets between SIGTERM and SIGKILL")
	fs.BoolVar(&a.mountProc, "mount-proc", false, "make all mounts private and mount a fresh /proc")
	fs.IntVar(&a.fds, "fds", 0, "number of inherited files beyond stdio (fds 3...) to pass on")
	fs.IntVar(&a.jobFD, "job-fd", -1, "a socket to the wrapper for job control on a terminal (not passed on)")
	fs.StringVar(&a.path, "path", "", "the program to run (default: argv[0], looked up in PATH)")
	fs.StringVar(&a.dir, "dir", "", "the command's working directory, entered after --uid/--gid take effect")
	uid := fs.Int64("uid", -1, "run the command with this user ID")
	gid := fs.Int64("gid", -1, "... and this group ID")
	groups := fs.String("groups", "", "... and these supplementary group IDs (comma-separated)")
	noSetGroups := fs.Bool("no-setgroups", false, "leave the supplementary groups alone")
	if err := fs.Parse(args); err != nil {
		return a, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *uid >= 0 || *gid >= 0 {
		if *uid < 0 || *gid < 0 || *uid > math.MaxUint32 || *gid > math.MaxUint32 {
			return a, fmt.Errorf("%w: --uid and --gid go together", ErrUsage)
		}
		a.cred = &syscall.Credential{Uid: uint32(*uid), Gid: uint32(*gid), NoSetGroups: *noSetGroups}
		for _, g := range strings.Split(*groups, ",") {
			if g == "" {
				continue
			}
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return a, fmt.Errorf("%w: --groups %q", ErrUsage, *groups)
			}
			a.cred.Groups = append(a.cred.Groups, uint32(n))
		}
	}
	a.argv = fs.Args()
	if len(a.argv) == 0 {
		return a, fmt.Errorf("%w: no command", ErrUsage)
	}
	if a.fds < 0 {
		return a, fmt.Errorf("%w: --fds %d", ErrUsage, a.fds)
	}
	if a.jobFD >= 0 && a.jobFD < 3+a.fds {
		return a, fmt.Errorf("%w: --job-fd %d is one of the files passed on", ErrUsage, a.jobFD)
	}
	return a, nil
}

// Main is the init: args are what follows "__init" on the command line. It
// returns the process exit status: the command's (128+N if it was killed by
// signal N), 127/126 when it cannot be found/executed, 2 on bad arguments.
func Main(args []string) int {
	// One P is plenty for a process that waits for signals; CMD does not
	// inherit this (it is not the GOMAXPROCS variable).
	runtime.GOMAXPROCS(1)
	stderr := os.Stderr
	a, err := parseArgs(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "snakepit %s: %v\n", Subcommand, err)
		return 2
	}
	if os.Getpid() != 1 {
		// Not a namespace init: still reap orphans of the command.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	if a.mountProc {
		if err := mountProc(); err != nil {
			// Containment does not depend on /proc; only what tools inside
			// see does. Say so and go on.
			fmt.Fprintf(stderr, "snakepit %s: %v (tools inside see the host's /proc)\n", Subcommand, err)
		}
	}
	// Capabilities granted for the mount (user-namespace mode) must not
	// reach the command. Capabilities are per thread and a child is a copy
	// of the thread that forks it: clear them on this thread and fork from
	// it (the goroutine stays locked to it).
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		fmt.Fprintf(stderr, "snakepit %s: clear ambient capabilities: %v\n", Subcommand, err)
		return 125
	}

	sigc := make(chan os.Signal, 64)
	signal.Notify(sigc, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)

	if a.jobFD >= 0 {
		// Ours alone: a command that held it could stop the wrapper
		// (a forged MsgStopped) or swallow its MsgContinue.
		unix.CloseOnExec(a.jobFD)
	}
	pid, err := startCommand(a)
	if err != nil {
		fmt.Fprintf(stderr, "snakepit %s: %v\n", Subcommand, err)
		switch {
		case errors.Is(err, unix.ENOENT):
			return 127
		default:
			return 126
		}
	}
	jobs := newJobControl(a.jobFD, pid)
	status := superviseCommand(pid, sigc, jobs)
	shutdownNamespace(a.grace, sigc)
	return status
}

func mountProc() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return nil
}

// startCommand starts the command in its own process group, handing it the
// terminal when ours is in the foreground (so ^C reaches it once, not via
// us as well).
func startCommand(a initArgs) (int, error) {
	path := a.path
	if path == "" {
		path = a.argv[0]
	}
	files := make([]uintptr, 3+a.fds)
	for i := range files {
		files[i] = uintptr(i)
	}
	attr := &syscall.SysProcAttr{Setpgid: true, Credential: a.cred}
	if jobctl.Ours(0) {
		attr.Foreground = true
		attr.Ctty = 0
	}
	// ProcAttr.Dir is entered after the credential is set: a directory
	// the command's user cannot enter is refused as without --pid-ns.
	pid, err := syscall.ForkExec(path, a.argv, &syscall.ProcAttr{
		Dir:   a.dir,
		Env:   os.Environ(),
		Files: files,
		Sys:   attr,
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", path, err)
	}
	return pid, nil
}

// superviseCommand forwards signals to pid and reaps every child until pid
// exits; it returns pid's shell status.
func superviseCommand(pid int, sigc <-chan os.Signal, jobs *jobControl) int {
	for {
		if st, done := reapAll(pid); done {
			return st
		}
		select {
		case s := <-sigc:
			if s == unix.SIGCHLD {
				jobs.stopped()
				continue
			}
			_ = unix.Kill(pid, s.(syscall.Signal))
		case <-jobs.continues():
			jobs.resume()
		}
	}
}

// reapAll reaps every exited child without blocking. It reports pid's
// status once pid is among them.
func reapAll(pid int) (status int, found bool) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got <= 0 {
			return status, found
		}
		if got == pid {
			found = true
			status = ws.ExitStatus()
			if ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		}
	}
}

// shutdownNamespace asks every other process of the namespace to leave
// (SIGTERM), reaps them for up to grace, and returns; the caller then exits,
// and the kernel SIGKILLs whatever is left when a namespace's init dies.
func shutdownNamespace(grace time.Duration, sigc <-chan os.Signal) {
	if os.Getpid() != 1 || grace <= 0 {
		return
	}
	if err := unix.Kill(-1, unix.SIGTERM); errors.Is(err, unix.ESRCH) {
		return // nobody else is left
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		if noChildren() {
			return
		}
		select {
		case <-sigc: // SIGCHLD or a forwarded signal with no one to take it
		case <-timer.C:
			return
		}
	}
}

// noChildren reaps what has exited and reports whether no child is left.
// In a PID namespace every process is a descendant of the init and every
// orphan becomes its child, so no child means an empty namespace.
func noChildren() bool {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			return true
		case err != nil || got == 0:
			return false
		}
	}
}

// RunIfInit runs the init and exits when this process was started as one
// (os.Args[1] is Subcommand); otherwise it returns at once. A program that
// embeds the snakepit library and uses Options.PidNS without InitPath
// (which defaults to /proc/self/exe, i.e. itself) calls it first thing in
// main.
func RunIfInit() {
	if len(os.Args) > 1 && os.Args[1] == Subcommand {
		os.Exit(Main(os.Args[2:]))
	}
}
