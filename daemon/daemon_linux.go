//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/guardian"
	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/systemd/sdnotify"
)

// Daemon is a running daemon; Run creates and runs one.
type Daemon struct {
	cfg                 Config
	log                 *slog.Logger
	grace, maxGrace     time.Duration
	maxRuns, maxWorkers int
	gid                 int
	metricsGID          int // besides root, its members may read /metrics
	metrics             *metrics

	parent, mode string
	madeParent   bool // we created the configured parent: remove it at exit
	rp           *reaper.Reaper
	guardian     reaper.Identity
	gcRemoved    int
	events       *bus
	statusKick   chan struct{}
	workers      atomic.Int64 // running workers
	orphans      atomic.Int64 // reaped processes nobody waited for
	sockInfo     fs.FileInfo  // our socket file, to remove only ours

	fds fdCount // for GET /v1/status

	qmu    sync.Mutex // guards usage, starts; taken inside mu and runState.mu, never around them
	usage  map[int]*usage
	starts map[int]chan struct{} // per non-root UID: its starts in progress (start_linux.go)
	opens  map[int]int           // per UID: its opens of output files in progress (peer_linux.go)

	mu       sync.Mutex
	runs     map[string]*runState
	creating int // runs being created
	closing  bool
	inflight sync.WaitGroup // createRun calls
	watchers sync.WaitGroup // workers whose exit is not recorded yet (workerExited)
	// graceOver ends --grace after shutdown began: a teardown still in
	// its grace then (a member's DELETE with a longer one) kills at once.
	graceOver context.Context
	endGrace  context.CancelFunc
}

func newDaemon(cfg Config) (*Daemon, error) {
	d := &Daemon{
		cfg:        cfg,
		log:        cfg.Logger,
		grace:      cfg.Grace,
		maxGrace:   cfg.MaxGrace,
		maxRuns:    cfg.MaxRuns,
		maxWorkers: cfg.MaxWorkers,
		gid:        cfg.GroupID,
		events:     newBus(),
		statusKick: make(chan struct{}, 1),
		runs:       make(map[string]*runState),
		usage:      make(map[int]*usage),
	}
	d.graceOver, d.endGrace = context.WithCancel(context.Background())
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.cfg.Socket == "" {
		d.cfg.Socket = api.DefaultSocket
	}
	if !filepath.IsAbs(d.cfg.Socket) {
		return nil, fmt.Errorf("%w: socket %q: must be an absolute path", ErrBadConfig, d.cfg.Socket)
	}
	// sun_path holds 107 bytes; the socket is bound under a temporary
	// name first (".<pid>.tmp" after it, up to 12 bytes).
	if n := len(d.cfg.Socket); n > 107-12 {
		return nil, fmt.Errorf("%w: socket %q: %d bytes, longer than a unix socket path may be here (95)", ErrBadConfig, d.cfg.Socket, n)
	}
	if d.grace <= 0 {
		d.grace = snakepit.DefaultGrace
	}
	if d.maxGrace <= 0 {
		d.maxGrace = 5 * time.Minute
	}
	if d.grace > d.maxGrace {
		d.maxGrace = d.grace
	}
	if d.maxRuns <= 0 {
		d.maxRuns = 4096
	}
	if d.maxWorkers <= 0 {
		d.maxWorkers = 1024
	}
	if d.gid <= 0 && cfg.Group != "" {
		gid, err := lookupGroup(cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
		d.gid = gid
	}
	d.metricsGID = cfg.MetricsGroupID
	if d.metricsGID <= 0 && cfg.MetricsGroup != "" {
		gid, err := lookupGroup(cfg.MetricsGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: metrics group: %w", ErrBadConfig, err)
		}
		d.metricsGID = gid
	}
	d.metrics = newMetrics(d)
	return d, nil
}

// lookupGroup resolves a group name, or a numeric GID.
func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err == nil {
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			return 0, fmt.Errorf("group %q: gid %q: %w", name, g.Gid, err)
		}
		return gid, nil
	}
	if gid, nerr := strconv.Atoi(name); nerr == nil && gid > 0 {
		return gid, nil
	}
	return 0, fmt.Errorf("group %q: %w", name, err)
}

// Run starts a daemon and serves until ctx ends (SIGTERM), then tears
// every run down (SIGTERM, Config.Grace, cgroup.kill, rmdir) and returns.
// A nil error means a clean shutdown.
func Run(ctx context.Context, cfg Config) error {
	// Before anything else opens (or starts) something.
	if err := markInheritedCloexec(); err != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	d, err := newDaemon(cfg)
	if err != nil {
		return err
	}
	// One daemon per socket, decided before either touches its parent or
	// its runs: two started at once both found the socket stale and bound.
	unlock, err := lockSocket(cfg.Socket)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.chooseLayout(ctx); err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving && d.madeParent {
			// A start that failed leaves nothing it made; it holds no run.
			_ = unix.Rmdir(d.parent)
		}
	}()

	// The daemon is the subreaper of everything its workers leave behind
	// and the process's one wait4(-1) caller.
	if err := reaper.SetSubreaper(); err != nil {
		return fmt.Errorf("subreaper: %w", err)
	}
	d.rp = reaper.New(func(reaper.Exit) { d.orphans.Add(1) })
	d.rp.Start()
	defer d.rp.Stop()

	gctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	d.gcRemoved, err = d.gcStale(gctx)
	cancel()
	if err != nil {
		d.log.Warn("gc of stale runs", "err", err)
	}
	d.metrics.staleRemoved.Add(float64(d.gcRemoved))

	if !cfg.NoGuardian {
		bin := cfg.GuardianBinary
		if bin == "" {
			// The daemon is snakepit: its guardian is itself.
			if bin, err = os.Executable(); err != nil {
				return fmt.Errorf("guardian: %w", err)
			}
		}
		g, err := guardian.Start(ctx, guardian.Options{
			Parents: []string{d.parent},
			Binary:  bin,
			Reaper:  d.rp,
		})
		if err != nil {
			return fmt.Errorf("guardian: %w", err)
		}
		d.guardian = g
	}

	ln, err := d.listen()
	if err != nil {
		return err
	}
	if cfg.ParentsFile != "" {
		if err := writeParents(cfg.ParentsFile, d.parent); err != nil {
			ln.Close()
			d.removeSocket()
			return err
		}
	}

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	if sdnotify.Available() {
		// Without a listener, kickStatus only fills statusKick's one
		// slot: no goroutine wakes, and no timer is set, per request.
		bgWG.Add(1)
		go func() { defer bgWG.Done(); d.statusLoop(bg) }()
	}
	if iv, err := sdnotify.WatchdogInterval(); err == nil && iv > 0 {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); sdnotify.RunWatchdog(bg, iv, d.healthy) }()
	}

	srv := d.newServer()
	serving = true // from here on, shutdown removes what we made
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	info := Info{Socket: d.cfg.Socket, RunParent: d.parent, Mode: d.mode, StaleRunsRemoved: d.gcRemoved, GuardianPID: d.guardian.PID}
	d.log.Info("ready", "socket", info.Socket, "run_parent", info.RunParent, "mode", info.Mode,
		"stale_runs_removed", info.StaleRunsRemoved, "guardian", info.GuardianPID)
	if err := sdnotify.Ready(d.statusLine()); err != nil {
		d.log.Warn("sd_notify READY", "err", err)
	}
	if cfg.OnReady != nil {
		cfg.OnReady(info)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	}
	shutErr := d.shutdown(ctx, srv)
	stopBG()
	bgWG.Wait()
	return errors.Join(runErr, shutErr)
}

// shutdown stops accepting requests, tears every run down concurrently
// and removes what the daemon made.
func (d *Daemon) shutdown(ctx context.Context, srv *http.Server) error {
	d.mu.Lock()
	d.closing = true
	n := len(d.runs)
	d.mu.Unlock()
	_ = sdnotify.Stopping(fmt.Sprintf("stopping: tearing down %d runs (grace %v)", n, d.grace))
	d.log.Info("stopping", "runs", n, "grace", d.grace)
	defer time.AfterFunc(d.grace, d.endGrace).Stop()

	// End event streams, stop accepting; in-flight requests finish (or
	// fail with 503) while runs are torn down.
	d.events.closeAll()
	shutDone := make(chan struct{})
	go func() {
		defer close(shutDone)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	d.inflight.Wait()

	d.mu.Lock()
	list := make([]*runState, 0, len(d.runs))
	for _, rs := range d.runs {
		list = append(list, rs)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	// Teardowns in flight are bounded: each holds descriptors (the
	// cgroup's, its workers' pidfds) and a goroutine or two, and all of
	// them share one grace anyway.
	sem := make(chan struct{}, maxTeardowns)
	for _, rs := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			td := d.teardownRun(ctx, rs, d.grace)
			if td.Error != "" {
				errMu.Lock()
				errs = append(errs, fmt.Errorf("run %s: %s", td.ID, td.Error))
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	<-shutDone
	// Every worker is dead; their exits are recorded at once.
	d.watchers.Wait()
	d.removeSocket()
	if d.madeParent {
		// Best effort: someone else may have put cgroups there meanwhile.
		_ = unix.Rmdir(d.parent)
	}
	if d.cfg.ParentsFile != "" {
		if err := os.Remove(d.cfg.ParentsFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	d.log.Info("stopped", "runs", len(list), "errors", len(errs))
	return errors.Join(errs...)
}

// maxTeardowns bounds the teardowns in flight at shutdown.
const maxTeardowns = 64

// healthy is the watchdog's check: the daemon's main lock can be taken.
func (d *Daemon) healthy(ctx context.Context) bool {
	ok := make(chan struct{})
	go func() {
		d.mu.Lock()
		_ = len(d.runs)
		d.mu.Unlock()
		close(ok)
	}()
	select {
	case <-ok:
		return true
	case <-ctx.Done():
		return false
	case <-time.After(5 * time.Second):
		return false
	}
}

func (d *Daemon) statusLine() string {
	d.mu.Lock()
	runs := len(d.runs)
	d.mu.Unlock()
	return fmt.Sprintf("runs: %d, workers: %d; stale runs removed at start: %d; runs under %s (%s)",
		runs, d.workers.Load(), d.gcRemoved, d.parent, d.mode)
}

func (d *Daemon) kickStatus() {
	select {
	case d.statusKick <- struct{}{}:
	default:
	}
}

// statusLoop sends STATUS= when counts change, at most every 100 ms.
func (d *Daemon) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.statusKick:
		}
		_ = sdnotify.Status(d.statusLine())
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (d *Daemon) publish(rs *runState, ev api.Event) {
	ev.Time = time.Now().UTC()
	d.events.publish(ownedEvent{Event: ev, owner: rs.owner})
}

// listen binds the socket under a temporary name, sets its owner and mode,
// then renames it into place, so that it is never reachable with looser
// permissions. A live daemon on the path is an error; a stale socket file
// is replaced.
// lockSocket takes the lock beside socket for the daemon's lifetime: a
// second daemon gets ErrRunning. The lock file stays (a file beside the
// socket, as the guardian's); the lock goes with the process.
func lockSocket(socket string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(socket+".lock", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", socket, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrRunning, socket)
		}
		return nil, fmt.Errorf("lock %s: %w", socket, err)
	}
	return func() { unix.Close(fd) }, nil
}

func (d *Daemon) listen() (*peerListener, error) {
	path := d.cfg.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s", ErrRunning, path)
		}
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	// The socket's group is --group's, else --metrics-group's: a file
	// has one group, so members of a second, different group reach the
	// socket only through a wider --socket-mode (the daemon still refuses
	// them everything but what their group allows).
	gid := 0
	switch {
	case d.gid > 0:
		gid = d.gid
	case d.metricsGID > 0:
		gid = d.metricsGID
	}
	mode := d.cfg.SocketMode
	if mode == 0 {
		mode = 0o600
		if gid > 0 {
			mode = 0o660
		}
	}
	err = os.Chown(tmp, 0, gid)
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		l.Close()
		return nil, err
	}
	d.sockInfo = st
	return newPeerListener(l, maxConns, maxConnsPerUID, rootConns), nil
}

// removeSocket unlinks the socket if it is still ours.
func (d *Daemon) removeSocket() {
	if d.sockInfo == nil {
		return
	}
	if st, err := os.Stat(d.cfg.Socket); err == nil && os.SameFile(st, d.sockInfo) {
		_ = os.Remove(d.cfg.Socket)
	}
}

// writeParents records the run parent for other processes, atomically.
func writeParents(path, parent string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(tmp, []byte(parent+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
