//go:build linux

package jail

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/spec"
)

// netnsDir is where "ip netns add" binds named network namespaces.
const netnsDir = "/run/netns"

// nsGetNsType is ioctl NS_GET_NSTYPE (_IO(0xb7, 0x3)).
const nsGetNsType = 0xb703

// Netns is a run's network namespace: an open nsfs handle that workers are
// spawned into, or nothing for the host namespace.
//
// Workers join it through spawn.Options.Around: on the spawner's locked
// thread, setns into the run's namespace, fork, setns back. The spawner
// thread is the Pdeathsig parent of every worker, before and after such a
// switch; it stays the same thread. If setns back fails the spawner marks
// its thread unusable and keeps it parked (see package spawn), so it is
// never handed back to the Go scheduler in the wrong namespace.
type Netns struct {
	cfg    spec.Net
	mu     sync.RWMutex // held for reading across a setns, for writing by close
	ns     nsHandle
	closed bool
}

// OpenNet opens (NetNamed) or creates (NetNone) the run's network
// namespace. NetHost returns nil.
func OpenNet(n spec.Net) (*Netns, error) {
	if err := n.Validate(); err != nil {
		return nil, err
	}
	switch n.Mode {
	case spec.NetNone:
		ns, err := newLoopbackNetns()
		if err != nil {
			return nil, err
		}
		return &Netns{cfg: n, ns: ns}, nil
	case spec.NetNamed:
		ns, err := openNamedNetns(n.Name)
		if err != nil {
			return nil, err
		}
		return &Netns{cfg: n, ns: ns}, nil
	}
	return nil, nil
}

// newLoopbackNetns makes a network namespace with only lo, up. The work
// happens on a throwaway goroutine that locks its thread and never unlocks
// it: when the goroutine returns the Go runtime ends that thread, so a
// thread that was moved into the new namespace is never reused. No child
// is ever forked from that thread, so its end fires no Pdeathsig
// (golang/go#34031 is about exactly that combination).
func newLoopbackNetns() (nsHandle, error) {
	type result struct {
		ns  nsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // deliberately never unlocked
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("new network namespace: unshare(CLONE_NEWNET): %w", err)}
			return
		}
		ns, err := threadNetns()
		if err != nil {
			ch <- result{-1, fmt.Errorf("new network namespace: %w", err)}
			return
		}
		if err := loopbackUp(); err != nil {
			ns.Close()
			ch <- result{-1, fmt.Errorf("new network namespace: bring lo up: %w", err)}
			return
		}
		ch <- result{ns, nil}
	}()
	r := <-ch
	return r.ns, r.err
}

// loopbackUp sets lo up in the calling thread's network namespace. It is
// one SIOCSIFFLAGS ioctl: the netlink library it replaces made every
// snakepit process ~7% slower to reach main (docs/BENCHMARKS.md).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo: %w", err)
	}
	return nil
}

// nsHandle is an open network namespace (an nsfs file descriptor).
type nsHandle int

// threadNetns opens the calling thread's network namespace; the caller
// has locked its goroutine to the thread.
func threadNetns() (nsHandle, error) {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /proc/thread-self/ns/net: %w", err)
	}
	return nsHandle(fd), nil
}

// set moves the calling thread into the namespace.
func (h nsHandle) set() error { return unix.Setns(int(h), unix.CLONE_NEWNET) }

// Close closes the handle; the namespace lives on while anything uses it.
func (h nsHandle) Close() error {
	if h < 0 {
		return nil
	}
	return unix.Close(int(h))
}

// openNamedNetns opens /run/netns/NAME and checks that it is a network
// namespace.
func openNamedNetns(name string) (nsHandle, error) {
	if err := spec.ValidNetnsName(name); err != nil {
		return -1, err
	}
	p := filepath.Join(netnsDir, name)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("%w: %q (%s does not exist; make it with: ip netns add %s)", ErrNoNetns, name, p, name)
		}
		return -1, fmt.Errorf("%w: %q: open %s: %w", spec.ErrBadNetns, name, p, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %q: %s is not a namespace (not bind-mounted from nsfs)", spec.ErrBadNetns, name, p)
	}
	t, err := unix.IoctlRetInt(fd, nsGetNsType)
	if err == nil && t != unix.CLONE_NEWNET {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %q: %s is a namespace, but not a network namespace", spec.ErrBadNetns, name, p)
	}
	return nsHandle(fd), nil
}

// around wraps a spawn.Options.Around hook so that the worker is forked in
// the run's network namespace; inner (the caller's own hook) runs inside
// it. On a nil runNet it returns inner.
func (rn *Netns) Around(inner func() (func() error, error)) func() (func() error, error) {
	if rn == nil {
		return inner
	}
	return func() (func() error, error) {
		rn.mu.RLock()
		if rn.closed {
			rn.mu.RUnlock()
			return nil, ErrClosed
		}
		orig, err := threadNetns()
		if err != nil {
			rn.mu.RUnlock()
			return nil, fmt.Errorf("save the spawner thread's network namespace: %w", err)
		}
		restore := func() error {
			defer rn.mu.RUnlock()
			err := orig.set()
			orig.Close()
			if err != nil {
				return fmt.Errorf("setns back to the spawner's network namespace: %w", err)
			}
			return nil
		}
		if err := rn.ns.set(); err != nil {
			orig.Close()
			rn.mu.RUnlock()
			return nil, fmt.Errorf("setns into the run's network namespace (%s): %w", rn.cfg, err)
		}
		var innerUndo func() error
		if inner != nil {
			u, err := inner()
			if err != nil {
				// spawn runs the undo returned along with an error.
				return func() error { return errors.Join(runUndo(u), restore()) }, err
			}
			innerUndo = u
		}
		return func() error { return errors.Join(runUndo(innerUndo), restore()) }, nil
	}
}

func runUndo(u func() error) error {
	if u == nil {
		return nil
	}
	return u()
}

// close releases the run's handle on the namespace; the namespace itself
// lives on until its last worker exits.
func (rn *Netns) Close() {
	if rn == nil {
		return
	}
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if !rn.closed {
		rn.closed = true
		rn.ns.Close()
	}
}

// CheckNamed fails with ErrNoNetns (or spec.ErrBadNetns) unless the named
// namespace can be opened: a run checks before it is created.
func CheckNamed(name string) error {
	ns, err := openNamedNetns(name)
	if err != nil {
		return err
	}
	return ns.Close()
}
