// Package jobctl is the kernel side of job control on a terminal: which
// process group has the terminal, handing it from one group to another,
// noticing that a child was stopped (^Z), and stopping ourselves in turn.
// snakepit run hands the terminal to its command's process group; with
// --pid-ns the namespace's init does the same for its command, so both pass
// a stop on with these.
package jobctl
