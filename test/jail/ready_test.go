//go:build linux

package jail_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/reaper"
)

// readyPipe returns a pipe whose write end the wrapper inherits as fd 3;
// the read end yields what it writes there.
func readyPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// readAllTimeout reads r to EOF within d.
func readAllTimeout(t *testing.T, r *os.File, d time.Duration) string {
	t.Helper()
	c := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		c <- string(b)
	}()
	select {
	case s := <-c:
		return s
	case <-time.After(d):
		t.Fatalf("ready fd not closed within %v", d)
	}
	return ""
}

// --ready notify: the worker gets its own NOTIFY_SOCKET; READY=1 is
// reported on --ready-fd as "READY <runid> <pid>".
func TestReadyNotify(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := newRunID(t)
	pr, pw := readyPipe(t)
	start := time.Now()
	cmd, sc, errb := startProc(t, snakepitBin, helperEnvFor("notify"), []*os.File{pw},
		"run", "--no-guardian", "--run-id", id, "--ready", "notify", "--ready-timeout", "30s", "--ready-fd", "3", "--", selfExe)
	pw.Close()
	got := readAllTimeout(t, pr, 30*time.Second)
	t.Logf("ready after %v: %q", time.Since(start), got)
	f := strings.Fields(got)
	if len(f) != 3 || f[0] != "READY" || f[1] != id {
		t.Fatalf("ready fd got %q; stderr %s", got, errb)
	}
	if l := readLineTimeout(t, sc, 10*time.Second); l != "notified" {
		t.Errorf("worker output %q", l)
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	if code := waitStatus(t, cmd, 30*time.Second); code != 128+int(unix.SIGTERM) {
		t.Errorf("exit %d, want %d; stderr %s", code, 128+int(unix.SIGTERM), errb)
	}
}

// --ready-line: a stdout line matching the pattern makes the worker ready;
// every line is passed through in order.
func TestReadyLine(t *testing.T) {
	testenv.RequireCgroup2(t)
	id := newRunID(t)
	pr, pw := readyPipe(t)
	cmd, sc, errb := startCLI(t, []*os.File{pw}, "run", "--no-guardian", "--run-id", id,
		"--ready-line", `^GRPC_READY:\d+$`, "--ready-timeout", "30s", "--ready-fd", "3", "--",
		"sh", "-c", `echo starting; echo GRPC_READY:nope; echo GRPC_READY:50051; echo after; exec sleep 1000`)
	pw.Close()
	got := readAllTimeout(t, pr, 30*time.Second)
	if f := strings.Fields(got); len(f) != 3 || f[0] != "READY" || f[1] != id {
		t.Fatalf("ready fd got %q; stderr %s", got, errb)
	}
	var out []string
	for i := 0; i < 4; i++ {
		out = append(out, readLineTimeout(t, sc, 10*time.Second))
	}
	if want := []string{"starting", "GRPC_READY:nope", "GRPC_READY:50051", "after"}; strings.Join(out, "|") != strings.Join(want, "|") {
		t.Errorf("passed-through output %q, want %q", out, want)
	}
	_ = cmd.Process.Signal(unix.SIGTERM)
	waitStatus(t, cmd, 30*time.Second)
}

// --ready-timeout: a worker that never becomes ready is torn down with
// everything it started, the wrapper exits 119, and --ready-fd gets EOF
// without a READY line.
func TestReadyTimeout(t *testing.T) {
	testenv.RequireCgroup2(t)
	for _, mode := range [][]string{{"--ready", "notify"}, {"--ready-line", "NEVER"}} {
		t.Run(mode[0], func(t *testing.T) {
			id := newRunID(t)
			pr, pw := readyPipe(t)
			args := append([]string{"run", "--no-guardian", "--run-id", id, "--grace", "1s", "--ready-timeout", "500ms", "--ready-fd", "3"}, mode...)
			args = append(args, "--", "sh", "-c", `sleep 1000 & echo $!; echo $$; exec sleep 1000`)
			start := time.Now()
			cmd, sc, errb := startCLI(t, []*os.File{pw}, args...)
			pw.Close()
			var fds []int
			for i := 0; i < 2; i++ {
				l := readLineTimeout(t, sc, 30*time.Second)
				pid, err := strconv.Atoi(strings.TrimSpace(l))
				if err != nil {
					t.Fatalf("line %q", l)
				}
				fds = append(fds, pidfd(t, pid))
			}
			code := waitStatus(t, cmd, 30*time.Second)
			took := time.Since(start)
			if code != 119 {
				t.Errorf("exit %d, want 119; stderr %s", code, errb)
			}
			if !strings.Contains(errb.String(), "not ready") {
				t.Errorf("stderr %q", errb)
			}
			if got := readAllTimeout(t, pr, 5*time.Second); got != "" {
				t.Errorf("ready fd got %q, want EOF only", got)
			}
			for _, fd := range fds {
				if !reaper.PidfdExited(fd, 5*time.Second) {
					t.Error("a process of the run survived")
				}
			}
			t.Logf("timed out and torn down in %v: %s", took, strings.TrimSpace(errb.String()))
		})
	}
}

// The library: WaitReady reports the status line, a worker that exits
// first, and the timeout.
func TestWaitReadyLibrary(t *testing.T) {
	testenv.RequireCgroup2(t)
	ctx := context.Background()
	r := newRun(t, snakepit.Options{})
	var mu sync.Mutex
	var statuses []string
	w, err := r.Start(ctx, snakepit.Command{
		Args: []string{selfExe}, Env: helperEnvFor("notify"),
		Readiness: snakepit.Readiness{Notify: true, Timeout: snakepit.Duration(30 * time.Second),
			OnStatus: func(s string) { mu.Lock(); statuses = append(statuses, s); mu.Unlock() }},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := w.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != "serving on nothing" {
		t.Errorf("status %q", info.Status)
	}
	mu.Lock()
	t.Logf("ready after %v, statuses %q", info.After, statuses)
	mu.Unlock()

	w2, err := r.Start(ctx, snakepit.Command{Args: []string{"sh", "-c", "exit 3"}, Readiness: snakepit.Readiness{Notify: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w2.WaitReady(ctx); !errors.Is(err, snakepit.ErrExitedBeforeReady) {
		t.Errorf("exited worker: %v", err)
	}
	w3, err := r.Start(ctx, snakepit.Command{Args: []string{"sleep", "1000"},
		Readiness: snakepit.Readiness{Line: "x", Timeout: snakepit.Duration(100 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w3.WaitReady(ctx); !errors.Is(err, snakepit.ErrNotReady) {
		t.Errorf("timeout: %v", err)
	}
	// No readiness configured: ready at once.
	select {
	case <-w3.Done():
	default:
	}
	w4, err := r.Start(ctx, snakepit.Command{Args: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w4.Ready():
	default:
		t.Error("a worker without readiness settings is not ready")
	}
}

// A notify worker's socket directory is gone once the worker is reaped:
// an owner that exits right after (snakepit run) leaves nothing in /tmp.
func TestReadyNotifyDirGoneWithWorker(t *testing.T) {
	testenv.RequireCgroup2(t)
	ctx := context.Background()
	r := newRun(t, snakepit.Options{})
	for i := 0; i < 20; i++ {
		var out bytes.Buffer
		w, err := r.Start(ctx, snakepit.Command{Args: []string{"sh", "-c", `echo "$NOTIFY_SOCKET"`}, Stdout: &out,
			Readiness: snakepit.Readiness{Notify: true}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		sock := strings.TrimSpace(out.String())
		if sock == "" {
			t.Fatal("the worker got no NOTIFY_SOCKET")
		}
		if _, err := os.Stat(filepath.Dir(sock)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("worker %d reaped, its notify directory still there: %v", i, err)
		}
	}
}
