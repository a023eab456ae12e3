//go:build linux

package guardian

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/cgroup"
	"github.com/snakepit/snakepit/internal/testenv"
	"github.com/snakepit/snakepit/runid"
)

// A registration names one run cgroup by its ID; anything else is refused
// and the descriptors that came with it are closed.
func TestParseRegRefuses(t *testing.T) {
	id := runid.Generate()
	path := "/sys/fs/cgroup/parent/" + cgroup.Prefix + id
	for _, tc := range []struct{ name, body string }{
		{"no ID", "\x00\x00k"},
		{"bad ID", "../../x\x00\x00k"},
		{"path of another run", id + "\x00/sys/fs/cgroup/" + cgroup.Prefix + runid.Generate() + "\x00k"},
		{"path not a run cgroup", id + "\x00/home/u\x00k"},
		{"relative path", id + "\x00parent/" + cgroup.Prefix + id + "\x00k"},
		{"unclean path", id + "\x00/sys/fs/cgroup/../../home/" + cgroup.Prefix + id + "\x00k"},
		{"flag twice", id + "\x00" + path + "\x00kk"},
		{"unknown flag", id + "\x00" + path + "\x00kx"},
		{"fds without flags", id + "\x00" + path + "\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(p[1])
			if r, err := parseReg(tc.body, []int{p[0]}); err == nil {
				r.close()
				t.Fatalf("parseReg(%q) accepted it", tc.body)
			}
			if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
				unix.Close(p[0])
				t.Fatalf("parseReg(%q) left its fd open (F_GETFD: %v)", tc.body, err)
			}
		})
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	r, err := parseReg(id+"\x00"+path+"\x00k", []int{p[0]})
	if err != nil {
		unix.Close(p[0])
		t.Fatalf("a valid registration: %v", err)
	}
	r.close()
}

// The service registers nothing from a peer of another UID, even one that
// got a connection (here: a socket made reachable by everyone). The same
// registration from us tears the run down, so it is the peer check that
// spares it.
func TestServiceRefusesOtherUID(t *testing.T) {
	m := testenv.RequireCgroup2(t)
	dir, err := os.MkdirTemp("", "snakepit-records-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "guardian.log")
	t.Setenv(LogEnv, log)
	sock := filepath.Join(dir, "guardian.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })

	// A run cgroup with a process in it.
	parent := filepath.Join(m.Path, "sptest-guardian-"+runid.Generate())
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	id := runid.Generate()
	run := filepath.Join(parent, cgroup.Prefix+id)
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(run)
	if err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "1000")
	sleep.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	err = sleep.Start()
	cg.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleep.Process.Kill()
		_ = sleep.Wait()
		_ = cgroup.At(run).WaitEmpty(context.Background())
		_ = unix.Rmdir(run)
		_ = unix.Rmdir(parent)
	})
	reg := "R " + id + "\x00" + run + "\x00"

	// Registered by nobody, who then hangs up: refused.
	const nobody = 65534
	if err := registerAs(sock, nobody, reg); err != nil {
		t.Fatal(err)
	}
	populated := func() bool {
		b, _ := os.ReadFile(filepath.Join(run, "cgroup.events"))
		return strings.Contains(string(b), "populated 1")
	}
	testenv.Eventually(t, 10*time.Second, "the service refuses the connection or tears the run down", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "refused a connection from uid 65534") || !populated()
	})
	if !populated() {
		t.Fatal("another UID's registration tore the run down")
	}

	// Registered by us, who then hang up: torn down.
	if err := registerAs(sock, os.Geteuid(), reg); err != nil {
		t.Fatal(err)
	}
	if err := sleep.Wait(); err == nil {
		t.Fatal("sleep exited 0; want it killed")
	}
	testenv.Eventually(t, 10*time.Second, "the run cgroup is removed", func() bool {
		_, err := os.Stat(run)
		return errors.Is(err, os.ErrNotExist)
	})
}

// registerAs connects to sock with uid's credentials, sends msg (unless
// the service hung up first) and hangs up. The connect happens on a thread of its own whose UID alone is
// changed (a raw setresuid, not Go's all-threads one); the thread is never
// unlocked, so it ends with its goroutine.
func registerAs(sock string, uid int, msg string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			if uid != os.Geteuid() {
				if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
					return e
				}
			}
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
				return err
			}
			// A refused peer may find the connection closed already.
			if _, err := unix.Write(fd, []byte(msg)); err != nil && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
				return err
			}
			return nil
		}()
	}()
	return <-errc
}
