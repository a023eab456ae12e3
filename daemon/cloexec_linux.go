//go:build linux

package daemon

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// markInheritedCloexec marks every descriptor from 3 up close-on-exec, so
// that nothing the daemon inherited (a starting shell's pipe, a service
// manager's fds) reaches a worker, other users' included. close_range
// does it in one call (Linux >= 5.11 for CLOSE_RANGE_CLOEXEC); older
// kernels answer ENOSYS or EINVAL and get a walk of /proc/self/fd.
func markInheritedCloexec() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)) {
		return err
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < 3 || fd == int(d.Fd()) {
			continue
		}
		// A descriptor closed since the listing answers EBADF: nothing to do.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return err
		}
	}
	return nil
}
