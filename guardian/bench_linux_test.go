//go:build linux

package guardian

import (
	"context"
	"testing"

	"github.com/snakepit/snakepit/runid"
)

// BenchmarkRegister is what an owner process pays to be guarded, with the
// service running: connect, read the service's identity, start the watch,
// and one registration message (a POSIX run: no cgroup needed). The
// service's own work runs in this process here, in other goroutines.
func BenchmarkRegister(b *testing.B) {
	sock := serveForTest(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := &Client{sock: sock, regs: map[watchKey]*clientReg{}}
		if err := c.connect(ctx); err != nil {
			b.Fatal(err)
		}
		if err := c.Register(ctx, Registration{ID: runid.Generate()}); err != nil {
			b.Fatal(err)
		}
		c.mu.Lock()
		conn := c.conn
		c.conn = nil
		c.mu.Unlock()
		conn.Close()
	}
}
