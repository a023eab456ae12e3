//go:build linux

package placement

import (
	"os"

	"github.com/snakepit/snakepit/reaper"
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
	return reaper.PidfdExited(int(f.Fd()), 0)
}
