// Command fmworker is the worker of the fault-matrix test: one binary, one
// behaviour per first argument. The main process prints "ready" on stdout
// once its behaviour is set up, then reads commands from stdin: "crash"
// makes it die by SIGSEGV (it execs a shell that signals itself, keeping the
// PID and every child), end of input makes it exit 0. Every child it starts
// gets /dev/null as stdio, so only the main process holds the supervisor's
// pipes.
//
// Behaviours:
//
//	sleeper     nothing else
//	forker      50 sleeping children
//	daemonizer  a double-forked, setsid'd daemon with two sleeping children
//	termignore  ignores SIGTERM, and so do its three sleeping children
//	zombies     ten children that exit and are never reaped
//	scrubber    a double-forked, setsid'd process that clears its
//	            environment and rewrites its argv (exec with new ones)
//	storm       a shell forks 200 subshells in a tight loop and exits,
//	            orphaning them all (each blocks reading a pipe that never
//	            gets data: no exec, so the storm is as fast as fork)
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const sleepBin = "/bin/sleep"

func main() {
	if len(os.Args) < 2 {
		fatal("usage: fmworker BEHAVIOUR")
	}
	switch os.Args[1] {
	case "daemon1", "scrub1":
		intermediate(os.Args[1])
		return
	case "daemon2":
		daemon()
		return
	case "scrub2":
		scrub()
		return
	}
	switch os.Args[1] {
	case "sleeper":
	case "forker":
		// Started from several goroutines: the forks are serialised by
		// the runtime, the execs then overlap.
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); sleeper() }()
		}
		wg.Wait()
	case "daemonizer":
		viaPipe("daemon1")
	case "termignore":
		// Ignored signals stay ignored across fork and exec.
		signal.Ignore(syscall.SIGTERM)
		for i := 0; i < 3; i++ {
			sleeper()
		}
	case "zombies":
		zombies(10)
	case "scrubber":
		viaPipe("scrub1")
	case "storm":
		storm(200)
	default:
		fatal("unknown behaviour %q", os.Args[1])
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "crash" {
			crash()
		}
	}
	os.Exit(0)
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fmworker: "+format+"\n", args...)
	os.Exit(3)
}

// sleeper starts a child sleeping for long and reaps it in the background.
func sleeper() {
	c := exec.Command(sleepBin, "1000")
	if err := c.Start(); err != nil {
		fatal("start sleeper: %v", err)
	}
	go func() { _ = c.Wait() }()
}

// viaPipe starts "fmworker mode" with a pipe as fd 3 and waits until the
// pipe reports that the (grand)child is set up.
func viaPipe(mode string) {
	r, w, err := os.Pipe()
	if err != nil {
		fatal("pipe: %v", err)
	}
	c := exec.Command("/proc/self/exe", mode)
	c.ExtraFiles = []*os.File{w}
	if err := c.Start(); err != nil {
		fatal("start %s: %v", mode, err)
	}
	w.Close()
	go func() { _ = c.Wait() }()
	buf := make([]byte, 2)
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "ok" {
		fatal("%s: no readiness: %q %v", mode, buf[:n], err)
	}
	r.Close()
}

// intermediate is the first fork of a double fork: it starts the second in
// a new session and exits, orphaning it.
func intermediate(mode string) {
	next := map[string]string{"daemon1": "daemon2", "scrub1": "scrub2"}[mode]
	c := exec.Command("/proc/self/exe", next)
	c.ExtraFiles = []*os.File{os.NewFile(3, "ready")}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		fatal("start %s: %v", next, err)
	}
	os.Exit(0)
}

// daemon is a setsid'd daemon with two children.
func daemon() {
	for i := 0; i < 2; i++ {
		sleeper()
	}
	ready := os.NewFile(3, "ready")
	_, _ = ready.Write([]byte("ok"))
	ready.Close()
	select {}
}

// scrub replaces itself (same PID, already setsid'd) with a shell whose
// argv and environment carry no trace of the run; only then is readiness
// reported (by that shell), and it becomes a sleeper.
func scrub() {
	err := syscall.Exec("/bin/sh", []string{"innocent", "-c", "printf ok >&3; exec 3>&-; exec " + sleepBin + " 1000"}, []string{})
	fatal("exec: %v", err)
}

// storm runs the fork storm and returns once the forking shell has exited.
// Every subshell holds the pipe's write end as well, so its read never sees
// end of file however the others die.
func storm(n int) {
	r, w, err := os.Pipe()
	if err != nil {
		fatal("pipe: %v", err)
	}
	c := exec.Command("/bin/sh", "-c", `i=0; while [ $i -lt `+strconv.Itoa(n)+` ]; do (read x <&3) & i=$((i+1)); done`)
	c.ExtraFiles = []*os.File{r, w}
	if err := c.Run(); err != nil {
		fatal("storm: %v", err)
	}
	r.Close()
	w.Close()
}

// zombies starts n children that exit at once and never reaps them, then
// waits until all of them are zombies.
func zombies(n int) {
	var pids []int
	for i := 0; i < n; i++ {
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{Env: os.Environ()})
		if err != nil {
			fatal("fork: %v", err)
		}
		pids = append(pids, pid)
	}
	// The kernel gives no notification for "became a zombie" that does not
	// also reap; a bounded short poll of /proc/PID/stat is the way.
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !isZombie(pid) {
			if time.Now().After(deadline) {
				fatal("child %d never became a zombie", pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// crash makes the main process die by SIGSEGV without a core file: exec
// keeps the PID, the shell signals itself.
func crash() {
	_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	err := syscall.Exec("/bin/sh", []string{"sh", "-c", "kill -SEGV $$"}, os.Environ())
	fatal("crash: %v", err)
}
