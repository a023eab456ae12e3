//go:build unix

package client

import (
	"errors"
	"net"
	"syscall"
)

// open reports whether an idle connection is still open: a peek that would
// block means open; EOF or an error means the daemon closed it (or sent
// something unasked, which makes it unusable too).
func open(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errors.Is(err, syscall.EAGAIN)
		return true // never wait
	})
	return err == nil && alive
}
