package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/reaper"
)

// config is what every group needs; the orchestrator passes it to group
// children as flags.
type config struct {
	quick    bool
	root     string // the harness's own cgroup (everything it makes is below)
	snakepit string // the snakepit binary under test
	spidle   string // the idle Go program (memory baseline)
	perl     string
	bwrap    string
	tmp      string // scratch directory (records, sockets, logs)
}

func (c *config) flags(fs *flag.FlagSet) {
	fs.BoolVar(&c.quick, "quick", false, "fewer repetitions, smaller N (CI)")
	fs.StringVar(&c.root, "root", "", "cgroup directory of the harness (created; removed at the end)")
	fs.StringVar(&c.snakepit, "snakepit", "bin/snakepit", "snakepit binary")
	fs.StringVar(&c.spidle, "spidle", "", "idle Go program (memory baseline)")
	fs.StringVar(&c.perl, "perl", "/usr/bin/perl", "perl (forks the process trees without exec)")
	fs.StringVar(&c.bwrap, "bwrap", "", "bwrap binary (empty: look up on PATH)")
	fs.StringVar(&c.tmp, "tmp", "", "scratch directory")
}

func (c *config) args() []string {
	a := []string{"--root", c.root, "--snakepit", c.snakepit, "--spidle", c.spidle, "--perl", c.perl,
		"--bwrap", c.bwrap, "--tmp", c.tmp}
	if c.quick {
		a = append(a, "--quick")
	}
	return a
}

// pick returns quick in quick mode, full otherwise.
func (c *config) pick(full, quick int) int {
	if c.quick {
		return quick
	}
	return full
}

// Subdirectories of the harness cgroup.
func (c *config) runsDir() string    { return filepath.Join(c.root, "runs") }
func (c *config) libDir() string     { return filepath.Join(c.root, "lib") }
func (c *config) daemonDir() string  { return filepath.Join(c.root, "daemon") }
func (c *config) gcDir() string      { return filepath.Join(c.root, "gc") }
func (c *config) scratchDir() string { return filepath.Join(c.root, "scratch") }
func (c *config) driverDir() string  { return filepath.Join(c.root, "driver") }

// --- bare cgroup operations (the baselines: no library code) ---

func readPopulated(path string) (bool, error) {
	var buf [128]byte
	fd, err := unix.Open(filepath.Join(path, "cgroup.events"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil {
		return false, err
	}
	return strings.Contains(string(buf[:n]), "populated 1"), nil
}

func writeFile(path, val string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(val))
	return err
}

// bareWaitEmpty waits for "populated 0" the way anyone would write it:
// inotify on cgroup.events (rate-limited by the kernel) plus a re-read
// every millisecond.
func bareWaitEmpty(ctx context.Context, path string) error {
	if p, err := readPopulated(path); err != nil || !p {
		return err
	}
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(ifd)
	if _, err := unix.InotifyAddWatch(ifd, filepath.Join(path, "cgroup.events"), unix.IN_MODIFY); err != nil {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(ifd), Events: unix.POLLIN}}
	var drain [4096]byte
	for {
		p, err := readPopulated(path)
		if err != nil || !p {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n, _ := unix.Poll(pfd, 1); n > 0 {
			_, _ = unix.Read(ifd, drain[:])
		}
	}
}

// removal watches for the removal of a directory: an inotify watch on its
// parent, so that a removal by another process wakes the waiter at once.
type removal struct {
	ifd  int
	path string
}

func watchRemoval(path string) (*removal, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(ifd, filepath.Dir(path), unix.IN_DELETE|unix.IN_ONLYDIR); err != nil {
		unix.Close(ifd)
		return nil, err
	}
	return &removal{ifd: ifd, path: path}, nil
}

// Wait returns once the directory is gone.
func (r *removal) Wait(ctx context.Context) error {
	pfd := []unix.PollFd{{Fd: int32(r.ifd), Events: unix.POLLIN}}
	var drain [4096]byte
	for {
		if _, err := os.Stat(r.path); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n, _ := unix.Poll(pfd, 10); n > 0 {
			_, _ = unix.Read(r.ifd, drain[:])
		}
	}
}

func (r *removal) Close() { unix.Close(r.ifd) }

// bareRmdir removes an empty cgroup, retrying EBUSY (a just-emptied cgroup
// can be busy for an instant).
func bareRmdir(ctx context.Context, path string) error {
	for {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// bareKill is the teardown baseline: write cgroup.kill, wait until empty,
// rmdir.
func bareKill(ctx context.Context, path string) error {
	if err := writeFile(filepath.Join(path, "cgroup.kill"), "1"); err != nil {
		return fmt.Errorf("cgroup.kill: %w", err)
	}
	if err := bareWaitEmpty(ctx, path); err != nil {
		return err
	}
	return bareRmdir(ctx, path)
}

// procCount counts the processes in a cgroup and its descendants.
func procCount(path string) int {
	g, err := cgroup.Open(path)
	if err != nil {
		return 0
	}
	pids, err := g.ProcsRecursive()
	if err != nil {
		return 0
	}
	return len(pids)
}

// waitCount waits until cgroup path holds at least n processes. done, if
// not nil, is the worker's: its exit ends the wait with an error.
func waitCount(ctx context.Context, path string, n int, done <-chan struct{}) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c := procCount(path)
		if c >= n {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-done:
			return fmt.Errorf("%s: the worker exited with %d of %d processes started", path, c, n)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d processes, want %d", path, c, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// killTree kills and removes cgroup path and everything below it (cleanup,
// never timed). A missing path is fine.
func killTree(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = writeFile(filepath.Join(path, "cgroup.kill"), "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = bareWaitEmpty(ctx, path)
	var dirs []string
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := bareRmdir(ctx, dirs[i]); err != nil {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// --- process trees ---

// treeScript forks n-1 children (each calling setsid() first when asked)
// that sleep, then sleeps itself: n processes, started by fork without
// exec, so that populating 1000 takes well under a second on a quiet
// machine.
const treeScript = `my ($n, $s) = @ARGV;
for (2 .. $n) {
	my $p = fork;
	die "fork: $!" unless defined $p;
	if (!$p) { POSIX::setsid() if $s; sleep 100000; exit 0 }
}
sleep 100000;`

func treeArgs(perl string, n int, setsid bool) []string {
	s := "0"
	if setsid {
		s = "1"
	}
	return []string{perl, "-MPOSIX", "-e", treeScript, strconv.Itoa(n), s}
}

// startTree starts a tree of n processes as a worker of r and waits until
// all are in count (a cgroup path: the run's, or a bookkeeping one) and,
// for a setsid'd tree, until every child has left the worker's session
// (a child is in the cgroup from fork on, before it calls setsid).
func startTree(ctx context.Context, c *config, r *snakepit.Run, n int, setsid bool, count string, modify func(*exec.Cmd)) (*snakepit.Worker, error) {
	w, err := r.Start(ctx, snakepit.Command{Args: treeArgs(c.perl, n, setsid), Modify: modify})
	if err != nil {
		return nil, err
	}
	if err := waitCount(ctx, count, n, w.Done()); err != nil {
		return w, err
	}
	if !setsid {
		return w, nil
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if detached(count, w.PID()) >= n-1 {
			return w, nil
		}
		if err := ctx.Err(); err != nil {
			return w, err
		}
		if time.Now().After(deadline) {
			return w, fmt.Errorf("%s: children did not setsid", count)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// detached counts the processes in cgroup path, other than leader, that
// lead their own session.
func detached(path string, leader int) int {
	g, err := cgroup.Open(path)
	if err != nil {
		return 0
	}
	pids, err := g.ProcsRecursive()
	if err != nil {
		return 0
	}
	n := 0
	for _, pid := range pids {
		if pid == leader {
			continue
		}
		if st, err := reaper.ReadStat(pid); err == nil && st.Session == pid {
			n++
		}
	}
	return n
}

// --- misc ---

// vmRSS returns a process's VmRSS in MiB.
func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// startReaper makes this process a child subreaper with one wait4(-1) loop,
// for groups whose process trees leave orphans (they come to us and are
// reaped instead of piling up as zombies).
func startReaper() (*reaper.Reaper, error) {
	if err := reaper.SetSubreaper(); err != nil {
		return nil, err
	}
	rp := reaper.New(nil)
	rp.Start()
	return rp, nil
}

// startChild starts cmd under the reaper and returns its exit channel.
func startChild(rp *reaper.Reaper, cmd *exec.Cmd) (<-chan reaper.Exit, error) {
	return rp.Subscribe(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
}

// finishChild waits for a child started with startChild; the reaper already
// has its status, cmd.Wait only releases its resources.
func finishChild(ctx context.Context, cmd *exec.Cmd, exitc <-chan reaper.Exit) (unix.WaitStatus, error) {
	select {
	case e := <-exitc:
		_ = cmd.Wait()
		return e.Status, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// progress logs to stderr (the orchestrator passes it through).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "spbench: "+format+"\n", args...)
}

// asleep waits until pid is in interruptible sleep (state S), reading its
// stat after first and then every poll: a worker in nanosleep, a guardian
// in poll(2).
func asleep(ctx context.Context, pid int, first, poll time.Duration) error {
	deadline := time.Now().Add(10 * time.Second)
	time.Sleep(first)
	for {
		st, err := reaper.ReadStat(pid)
		if err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		if st.State == 'S' {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not asleep within 10s (state %c)", pid, st.State)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(poll)
	}
}

// settled is asleep, then a little more: a guardian's first sleep may
// still be on its way into poll(2).
func settled(ctx context.Context, pid int) error {
	if err := asleep(ctx, pid, 0, time.Millisecond); err != nil {
		return err
	}
	time.Sleep(5 * time.Millisecond)
	return nil
}
