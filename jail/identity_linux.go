package jail

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A worker whose identity changes is normally forked by Go with vfork: the
// spawning thread waits, holding its P, until the child has exec'd. The
// child has the worker's user IDs from its setuid to its execve, and that
// user may stop it (SIGSTOP) in between. The spawning thread then waits for
// ever, and so does the next garbage collection's stop of the world: the
// whole process. A process whose workers' users must not be able to do
// that (the daemon) starts them through ExecSubcommand instead: the forked
// child execs it with our identity, and it drops the identity and execs
// the command. A stop after its setuid holds only that process, the worker.

// ExecSubcommand is the hidden snakepit subcommand that runs ExecMain.
const ExecSubcommand = "__exec"

// WrapIdentity rewrites cmd (not yet started) to change its identity in
// helper's ExecSubcommand rather than in the forked child: the
// SysProcAttr.Credential and the working directory move to the helper's
// arguments. It returns the read end of a pipe on which the helper reports
// a failure before the command's exec (AwaitExec), and the write end, which
// the caller closes once the child has started. A cmd with no Credential,
// or an error already in cmd.Err, is left alone (nil files).
func WrapIdentity(cmd *exec.Cmd, helper string) (r, w *os.File, err error) {
	a := cmd.SysProcAttr
	if a == nil || a.Credential == nil || cmd.Err != nil {
		return nil, nil, nil
	}
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	c := a.Credential
	groups := make([]string, len(c.Groups))
	for i, g := range c.Groups {
		groups[i] = strconv.FormatUint(uint64(g), 10)
	}
	args := []string{"snakepit", ExecSubcommand,
		"--uid", strconv.FormatUint(uint64(c.Uid), 10), "--gid", strconv.FormatUint(uint64(c.Gid), 10),
		"--groups", strings.Join(groups, ","),
		"--parent", strconv.Itoa(os.Getpid()),
		"--err-fd", strconv.Itoa(3 + len(cmd.ExtraFiles))}
	if c.NoSetGroups {
		args = append(args, "--no-setgroups")
	}
	if cmd.Dir != "" {
		args = append(args, "--dir", cmd.Dir)
	}
	args = append(args, "--", cmd.Path)
	cmd.Args = append(args, cmd.Args...)
	cmd.Path, cmd.Dir = helper, ""
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	a.Credential = nil
	return r, w, nil
}

// AwaitExec waits until the helper started by a WrapIdentity'd cmd has
// exec'd the command (r reads EOF: the pipe's write end closed on exec) or
// reports why it could not, for at most ctx's time or awaitBound. It closes
// r. EOF also comes when the helper is killed first; the worker's exit then
// tells.
func AwaitExec(ctx context.Context, r *os.File) error {
	defer r.Close()
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(awaitBound)
	}
	_ = r.SetReadDeadline(d)
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return fmt.Errorf("waiting for the worker's exec: %w", err)
	}
	if len(b) == 0 {
		return nil
	}
	return decodeExecFailure(string(b))
}

// awaitBound bounds AwaitExec for a caller whose ctx has no deadline: a
// helper stopped before its exec must not hold the start for ever.
const awaitBound = 30 * time.Second

// The helper reports "OP ERRNO PATH": the step that failed (setuid, chdir,
// exec ...), its errno, and the path it was about.
func encodeExecFailure(op string, err error, path string) string {
	var no syscall.Errno
	if !errors.As(err, &no) {
		no = unix.EINVAL
	}
	return op + " " + strconv.Itoa(int(no)) + " " + path
}

func decodeExecFailure(s string) error {
	op, rest, _ := strings.Cut(s, " ")
	num, path, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(num)
	if err != nil {
		return fmt.Errorf("the worker's identity helper: %q", s)
	}
	perr := &fs.PathError{Op: op, Path: path, Err: syscall.Errno(n)}
	if op == "exec" {
		return &ExecError{Path: path, Err: perr.Err}
	}
	return perr
}

// ExecMain is ExecSubcommand: args are what follows it. It drops our
// identity to --uid/--gid/--groups, asks again for SIGKILL when the parent
// (--parent) dies (a change of identity clears that), changes to --dir and
// execs the command. A failure is written to --err-fd; it then returns the
// exit status (127: not found, 126: cannot be executed, 125: other).
func ExecMain(args []string) int {
	fl := flag.NewFlagSet(ExecSubcommand, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	uid := fl.Uint("uid", 0, "user ID")
	gid := fl.Uint("gid", 0, "group ID")
	groups := fl.String("groups", "", "supplementary group IDs, comma-separated")
	noSetGroups := fl.Bool("no-setgroups", false, "leave the supplementary groups alone")
	parent := fl.Int("parent", 0, "the parent's PID")
	errFD := fl.Int("err-fd", -1, "where a failure is reported")
	dir := fl.String("dir", "", "working directory")
	if err := fl.Parse(args); err != nil || fl.NArg() < 2 || *errFD < 3 {
		fmt.Fprintf(os.Stderr, "snakepit %s: bad arguments %q\n", ExecSubcommand, args)
		return 125
	}
	path, argv := fl.Arg(0), fl.Args()[1:]
	unix.CloseOnExec(*errFD) // the command must not inherit it
	fail := func(op string, err error, p string, code int) int {
		_, _ = unix.Write(*errFD, []byte(encodeExecFailure(op, err, p)))
		return code
	}
	var gs []int
	for _, g := range strings.Split(*groups, ",") {
		if g == "" {
			continue
		}
		n, err := strconv.Atoi(g)
		if err != nil {
			return fail("groups", unix.EINVAL, *groups, 125)
		}
		gs = append(gs, n)
	}
	runtime.LockOSThread()
	if !*noSetGroups {
		if err := syscall.Setgroups(gs); err != nil {
			return fail("setgroups", err, "", 125)
		}
	}
	if err := becomeUser(int(*uid), int(*gid)); err != nil {
		var se *os.SyscallError
		errors.As(err, &se)
		return fail(se.Syscall, se.Err, "", 125)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fail("prctl", err, "", 125)
	}
	if *parent > 0 && os.Getppid() != *parent {
		return 125 // the parent died before we asked: so must we
	}
	if *dir != "" {
		if err := unix.Chdir(*dir); err != nil {
			return fail("chdir", err, *dir, 125)
		}
	}
	err := syscall.Exec(path, argv, os.Environ())
	code := 126
	if errors.Is(err, unix.ENOENT) {
		code = 127
	}
	return fail("exec", err, path, code)
}
