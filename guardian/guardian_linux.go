//go:build linux

package guardian

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/record"
)

// Command is the hidden snakepit subcommand that runs a guardian.
const Command = "__guardian"

// Errors of this package.
var (
	// ErrUsage: a guardian command line that Args did not build.
	ErrUsage = errors.New("guardian: bad command line")
	// ErrNoBinary: no snakepit executable to run a guardian from.
	ErrNoBinary = errors.New("guardian: no snakepit binary")
)

// LogEnv, when set in the guardian's environment, names a file the
// guardian appends one line per action to (its stdio is /dev/null).
const LogEnv = "SNAKEPIT_GUARDIAN_LOG"

// Options configure a guardian: a small process, outside the run
// cgroups and in its own session, that watches an owner through a pidfd and,
// when the owner dies, tears down every run whose record names that owner.
type Options struct {
	// Owner is the process to watch; zero means the calling process
	// (Start) .
	Owner record.Owner
	// Parents are cgroup parents to search besides KnownParents().
	Parents []string
	// Grace is the teardown grace once the owner died; 0 (the default)
	// kills at once: an owner that dies uncleanly ran no shutdown.
	Grace time.Duration
	// Binary is the snakepit executable Start runs; empty means
	// FindBinary's choice. Never the caller's own program: a library
	// user's binary is not a guardian.
	Binary string
	// Reaper, if set, is the caller's wait4(-1) loop: the guardian is
	// started under its lock so that loop cannot interfere with the start.
	Reaper *reaper.Reaper
}

// Args returns the guardian's command line after the binary.
func (o Options) Args() []string {
	a := []string{Command,
		"--owner-pid", strconv.Itoa(o.Owner.PID),
		"--owner-start", strconv.FormatUint(o.Owner.Start, 10),
		"--owner-boot", o.Owner.BootID,
		"--grace", o.Grace.String(),
	}
	for _, p := range o.Parents {
		a = append(a, "--cgroup-parent", p)
	}
	return a
}

// ParseArgs parses the command line Args built (after Command), or the
// service's (ServiceArgs). serve is true for the latter.
func ParseArgs(args []string) (o Options, serve bool, err error) {
	fs := flag.NewFlagSet(Command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&serve, "serve", false, "run the guardian service on the listening socket at fd 3")
	fs.IntVar(&o.Owner.PID, "owner-pid", 0, "PID of the owner to watch")
	fs.Uint64Var(&o.Owner.Start, "owner-start", 0, "the owner's start time (field 22 of /proc/PID/stat)")
	fs.StringVar(&o.Owner.BootID, "owner-boot", "", "the owner's boot ID (default: this boot)")
	fs.DurationVar(&o.Grace, "grace", 0, "teardown grace once the owner died")
	fs.Func("cgroup-parent", "extra cgroup parent to search (repeatable)", func(v string) error {
		o.Parents = append(o.Parents, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, false, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return o, false, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if serve {
		return o, true, nil
	}
	if o.Owner.PID <= 0 || o.Owner.Start == 0 {
		return o, false, fmt.Errorf("%w: --owner-pid and --owner-start are required", ErrUsage)
	}
	if o.Owner.BootID == "" {
		b, err := record.BootID()
		if err != nil {
			return o, false, err
		}
		o.Owner.BootID = b
	}
	return o, false, nil
}

// BinaryEnv names the snakepit binary a library user's guardian runs.
const BinaryEnv = "SNAKEPIT_BIN"

// FindBinary returns the snakepit executable a guardian runs: explicit if
// set, else $SNAKEPIT_BIN, else "snakepit" on $PATH. Never os.Executable:
// in a library user's program that is their own binary, and re-executing
// it would run their main a second time and start no guardian.
func FindBinary(explicit string) (string, error) {
	for _, p := range []string{explicit, os.Getenv(BinaryEnv)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoBinary, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("snakepit")
	if err != nil {
		return "", fmt.Errorf("%w: set Binary or $%s, or put snakepit on $PATH", ErrNoBinary, BinaryEnv)
	}
	return p, nil
}

// Start starts a guardian for o.Owner and returns its identity as
// soon as it has been exec'd; it does not wait for the guardian to be
// ready. None is needed: the guardian verifies the owner's start time after
// opening its pidfd and acts at once if the owner is already gone. The
// guardian gets its own session (setsid), so signals to the caller's
// process group or terminal never reach it, no Pdeathsig, stdio on
// /dev/null (it must not hold a caller's pipes open), and lives outside every run (under systemd in a scope of its own:
// placeOutside). The caller need not wait for it.
func Start(ctx context.Context, o Options) (reaper.Identity, error) {
	if o.Owner.PID == 0 {
		self, err := record.Self()
		if err != nil {
			return reaper.Identity{}, err
		}
		o.Owner = self
	}
	bin, err := FindBinary(o.Binary)
	if err != nil {
		return reaper.Identity{}, err
	}
	if err := ctx.Err(); err != nil {
		return reaper.Identity{}, err
	}
	// Not CommandContext: the guardian must outlive ctx and us.
	cmd := exec.Command(bin, o.Args()...)
	// One P is plenty for a process that sleeps in poll(2); it keeps the
	// guardian's thread count and RSS down.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// It normally outlives us; should it exit first, it is reaped.
	pid, err := reaper.StartDetached(o.Reaper, cmd)
	if err != nil {
		return reaper.Identity{}, fmt.Errorf("start guardian: %w", err)
	}
	_ = placeOutside(ctx, pid)
	id, err := reaper.IdentityOf(pid)
	if err != nil {
		// It exited already: only possible if the owner was gone or
		// another guardian watches the owner.
		return reaper.Identity{PID: pid}, nil
	}
	return id, nil
}

// Report says what a guardian did.
type Report struct {
	// Deduplicated is true when another guardian already watched the owner
	// and this one exited at once.
	Deduplicated bool
	// OwnerWasGone is true when the owner had died before we watched it.
	OwnerWasGone bool
	// Torn are the runs torn down.
	Torn []inventory.OwnedTeardown
	// Latency is the time from noticing the owner's death to all runs gone.
	Latency time.Duration
}

// Run is the guardian's body: it blocks until o.Owner dies (or ctx
// ends, then it returns ctx's error without tearing anything down), tears
// down every run whose record names the owner, and returns. Only one
// guardian per owner keeps watching: later ones find the owner's lock taken
// and return at once (Deduplicated).
func Run(ctx context.Context, o Options) (Report, error) {
	var rep Report
	if o.Owner.PID <= 0 {
		return rep, errors.New("guardian: no owner PID")
	}
	unlock, held := guardianLock(o.Owner)
	if held {
		rep.Deduplicated = true
		return rep, nil
	}
	defer unlock()

	gone, err := waitOwner(ctx, o.Owner)
	if err != nil {
		return rep, err
	}
	rep.OwnerWasGone = gone
	t0 := time.Now()
	// The owner is dead: nothing may stop the teardown now but a bound.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.Grace+30*time.Second)
	defer cancel()
	rep.Torn, err = inventory.TeardownOwned(tctx, o.Owner, o.Grace, o.Parents...)
	rep.Latency = time.Since(t0)
	return rep, err
}

// waitOwner returns once the owner has died. gone is true when it was
// already gone (or its PID reused) when we looked.
func waitOwner(ctx context.Context, owner record.Owner) (gone bool, err error) {
	pin, err := reaper.Pin(owner.Identity())
	if errors.Is(err, reaper.ErrNoProcess) || errors.Is(err, reaper.ErrReused) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("guardian: watch owner: %w", err)
	}
	defer pin.Close()
	if alive, _ := owner.Check(); !alive {
		return true, nil // e.g. another boot's record
	}
	if pin.FD() < 0 {
		// No pidfd (Linux < 5.3): the kernel offers no exit notification
		// for a non-child; poll /proc.
		for !pin.Exited() {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return false, nil
	}
	// Wake on the owner's exit (its pidfd, in the runtime's poller), on the
	// exit of one of its threads in its death (sooner, as in the service:
	// notice_linux.go), or on ctx; never on a timer. The goroutines end
	// when their file and notice are closed (their channels are buffered).
	fd, err := unix.FcntlInt(uintptr(pin.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("guardian: watch owner: %w", err)
	}
	f := reaper.PidfdFile(fd, "owner pidfd")
	defer f.Close()
	exited := make(chan bool, 1)
	go func() { exited <- reaper.WaitPidfd(f) }()
	var noticed chan bool // nil: no thread notice on this kernel
	if threadPidfds() {
		d := newDeathNotice(owner.PID)
		defer d.Close()
		noticed = make(chan bool, 1)
		go func() { noticed <- d.Wait() }() // false only once closed
	}
	select {
	case ok := <-exited:
		if !ok {
			return false, errors.New("guardian: watch owner: cannot wait on its pidfd")
		}
	case <-noticed:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return false, nil
}

// guardianLock takes the per-owner guardian lock (flock on
// <records dir>/../guardians/<pid>-<start>.lock). held is true when another
// guardian has it. When the lock cannot be made (no writable directory)
// every guardian keeps watching: duplicates are harmless, only wasteful.
func guardianLock(owner record.Owner) (unlock func(), held bool) {
	p := record.GuardianLockPath(owner)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return func() {}, false
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return func() {}, false
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, true
		}
		return func() {}, false
	}
	_, _ = unix.Write(fd, []byte(strconv.Itoa(os.Getpid())+"\n"))
	return func() {
		// Unlink before unlocking: the owner is dead, no new guardian can
		// want this lock, and no later guardian may find a stale file.
		_ = os.Remove(p)
		unix.Close(fd)
	}, false
}
