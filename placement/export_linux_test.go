//go:build linux

package placement

import (
	"os"

	"golang.org/x/sys/unix"
)

func pidfdOf(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

func exited(f *os.File) bool {
	p := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	n, _ := unix.Poll(p, 0)
	return n > 0
}
