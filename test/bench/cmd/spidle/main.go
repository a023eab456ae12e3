// Command spidle is the smallest Go program that stays alive: the
// benchmark harness reads its RSS as the floor any Go process pays (the
// baseline of the guardian's and the daemon's memory rows).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
