//go:build !linux

package daemon

import "context"

// Run returns ErrUnsupported off Linux.
func Run(ctx context.Context, cfg Config) error { return ErrUnsupported }
