//go:build linux

package pidns

import (
	"os/exec"
	"testing"

	"github.com/snakepit/snakepit/internal/testenv"
)

// The start cost of --pid-ns: /bin/true run plainly, through the init in a
// new PID and mount namespace (the init is this test binary, a Go program
// like snakepit), and through bubblewrap's --unshare-pid --die-with-parent
// for comparison. Each iteration starts the command and waits for it.

func BenchmarkStartPlain(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStartPidNS(b *testing.B) {
	testenv.RequireRoot(b)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command("/bin/true")
		Wrap(cmd, Options{InitPath: SelfExe})
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStartBwrap(b *testing.B) {
	bwrap := testenv.RequireTool(b, "bwrap")
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent", "/bin/true")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}
