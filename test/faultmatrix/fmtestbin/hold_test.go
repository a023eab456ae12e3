//go:build linux

// Package fmtestbin is a test binary that uses snakepittest: the fault
// matrix builds it with `go test -c` and SIGKILLs it while its run holds a
// process tree.
package fmtestbin

import (
	"fmt"
	"os"
	"testing"

	"github.com/snakepit/snakepit/snakepittest"
)

// TestHold starts $FM_TREE in a snakepittest run, prints the run cgroup's
// path and waits to be killed.
func TestHold(t *testing.T) {
	tree := os.Getenv("FM_TREE")
	if tree == "" {
		t.Skip("run by the fault matrix")
	}
	r := snakepittest.New(t)
	if err := r.Command("/bin/sh", "-c", tree).Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Println(r.CgroupPath())
	select {}
}
