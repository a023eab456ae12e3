package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// builtEnv hands the binary a test process built to the copies of its test
// binary it starts as helpers (a supervisor a test SIGKILLs): they use it
// instead of building, and leaving behind, one of their own.
const builtEnv = "SNAKEPIT_TEST_BUILT_BIN"

// MainWithGuardian runs m (from TestMain) with the snakepit binary built
// into a temporary directory and $SNAKEPIT_BIN pointing at it, so that runs
// a test creates are guarded by default (a test binary is not snakepit, and
// none need be installed). A guardian service it starts exits shortly after
// the test process: its idle time is cut to a tenth of a second. The
// directory is removed when m is done. It returns m's exit code.
func MainWithGuardian(m *testing.M) int {
	if bin := os.Getenv(builtEnv); bin != "" {
		// A helper copy: its parent owns the build and removes it.
		if _, err := os.Stat(bin); err == nil {
			setGuardian(bin)
			return m.Run()
		}
	}
	dir, err := os.MkdirTemp("", "snakepit-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "snakepit")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/snakepit/snakepit/cmd/snakepit").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build snakepit: %v\n%s", err, out)
		return 1
	}
	os.Setenv(builtEnv, bin)
	setGuardian(bin)
	return m.Run()
}

func setGuardian(bin string) {
	os.Setenv("SNAKEPIT_BIN", bin)
	os.Setenv("SNAKEPIT_GUARDIAN_IDLE", "100ms")
}
