//go:build linux

// Command fmsupervisor is a Go program that uses the library as a
// supervisor would: it Creates a run (guarded by default) under the cgroup
// parent in argv[1], starts `sh -c argv[2]` in it, prints the run cgroup's
// path and waits to be killed.
package main

import (
	"context"
	"fmt"
	"os"

	snakepit "github.com/snakepit/snakepit"
)

func main() {
	ctx := context.Background()
	r, err := snakepit.Create(ctx, snakepit.Options{CgroupParent: os.Args[1]})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fmsupervisor:", err)
		os.Exit(1)
	}
	if _, err := r.Start(ctx, snakepit.Command{Args: []string{"/bin/sh", "-c", os.Args[2]}}); err != nil {
		fmt.Fprintln(os.Stderr, "fmsupervisor:", err)
		os.Exit(1)
	}
	fmt.Println(r.CgroupPath())
	select {}
}
