package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// GuardianBinary builds the snakepit binary into dir and points
// $SNAKEPIT_BIN at it, so that runs a test creates are guarded by default
// (a test binary is not snakepit, and none need be installed). A guardian
// service it starts exits shortly after the test process: its idle time is
// cut to a tenth of a second. It returns the binary's path.
func GuardianBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "snakepit")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/snakepit/snakepit/cmd/snakepit").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build snakepit: %v\n%s", err, out)
	}
	os.Setenv("SNAKEPIT_BIN", bin)
	os.Setenv("SNAKEPIT_GUARDIAN_IDLE", "100ms")
	return bin, nil
}
