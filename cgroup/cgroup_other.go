//go:build !linux

package cgroup

// FindMount reports ErrUnsupported off Linux.
func FindMount() (struct{ Path string }, error) { return struct{ Path string }{}, ErrUnsupported }
