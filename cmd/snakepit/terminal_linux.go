package main

import (
	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/jobctl"
)

// The command of `snakepit run` on a terminal runs in its own process
// group, which gets the terminal: ^C reaches it once, not through us as
// well. Job control then has to be passed on by hand: a ^Z stops the
// command's group, not the shell's job (us), so we stop ourselves in turn,
// and continue the command when we are continued (fg, bg). With --pid-ns
// our child is the namespace's init, which tells us (Worker.JobStops).

// isForegroundTTY reports whether fd is a terminal whose foreground process
// group is ours: only then do we hand the terminal to the command.
func isForegroundTTY(fd int) bool { return jobctl.Ours(fd) }

// restoreForeground takes the terminal back after the command's process
// group had it, so the shell that started us is not left without one.
func restoreForeground(fd int) { jobctl.HandOff(fd, 0, unix.Getpgrp()) }

// suspend is called when the command's process group pgid was stopped
// from the terminal tty: we take the terminal back if the group had it,
// stop ourselves so that the shell sees its job stopped, and once
// continued hand the terminal back (if we were continued in the
// foreground) and continue the group: cont, or SIGCONT when nil. (With
// --pid-ns pgid is the init's group, which cont asks to go on.)
func suspend(tty, pgid int, cont func()) {
	us := unix.Getpgrp()
	jobctl.HandOff(tty, pgid, us)
	jobctl.StopSelf() // until the shell's SIGCONT
	jobctl.HandOff(tty, us, pgid)
	if cont != nil {
		cont()
		return
	}
	_ = unix.Kill(-pgid, unix.SIGCONT)
}
