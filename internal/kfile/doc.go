// Package kfile reads the small files the kernel synthesises (procfs,
// cgroupfs, sysfs) with plain open/read/close system calls, and opens
// directories of those file systems as files the Go poller never sees.
//
// os.ReadFile and os.Open register every descriptor with the Go runtime's
// poller first: procfs and cgroupfs files are pollable, so each read costs
// an extra fcntl, an epoll_ctl pair and a fstat, and the first one sets
// the poller up (epoll_create1, eventfd2). Measured on the hosts this
// project runs on, that was half the cost of reading a small cgroup file;
// it also sits on the path of every `snakepit run` and every /proc scan.
// These files are never slow to read, so blocking reads are right.
package kfile
