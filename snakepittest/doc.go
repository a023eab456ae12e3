// Package snakepittest gives a Go test its own snakepit run and fails the
// test if any process it started there is still alive when the test ends.
//
//	func TestServer(t *testing.T) {
//		r := snakepittest.New(t)              // the run; torn down by t.Cleanup
//		cmd := r.Command("my-server", "--port", "0")
//		if err := cmd.Start(); err != nil {   // starts inside the run cgroup
//			t.Fatal(err)
//		}
//		...
//		cmd.Process.Kill()
//		cmd.Wait()
//	} // a daemonized grandchild of my-server still alive here fails the test:
//	  //   snakepittest: leaked process pid 4242: my-server --worker
//
// Command returns an ordinary *exec.Cmd preconfigured to start straight into
// the run's cgroup (clone3 CLONE_INTO_CGROUP via SysProcAttr.UseCgroupFD),
// with SNAKEPIT_RUN_ID in its environment and a WaitDelay, so Output and
// Wait cannot hang on a leaked grandchild that holds a pipe. Everything the
// command starts, however it daemonizes, stays in the cgroup. For workers
// with Pdeathsig and pidfd signalling use Run().Start instead.
//
// At cleanup every process still in the cgroup is a leak (a process that is
// already dying from SIGKILL is not), each is reported with t.Errorf naming
// its PID and command line, and then the whole run is killed and removed.
// Waiting for the commands it started is the test's business, as with
// os/exec: Close does not touch them (a test may wait on another
// goroutine).
//
// New needs root and a cgroup2 mount: without them the test is skipped, or
// fails when CI=true. The run is registered with the guardian service (see
// snakepit.Options.GuardianBinary: $SNAKEPIT_BIN or snakepit on $PATH), so
// that even a test binary killed by SIGKILL (or a timeout panic, which runs
// no cleanups) leaves nothing; without a snakepit binary the test logs that
// its run is unguarded, and 'snakepit gc' removes such runs later.
package snakepittest
