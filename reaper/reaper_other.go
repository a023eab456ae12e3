//go:build !linux

package reaper

// SetSubreaper returns ErrUnsupported off Linux.
func SetSubreaper() error { return ErrUnsupported }
