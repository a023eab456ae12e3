//go:build !linux

package main

import (
	"fmt"
	"os"
)

func realMain([]string) int {
	fmt.Fprintln(os.Stderr, "spbench: Linux only")
	return 2
}
