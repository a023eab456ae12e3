// Command spbench is snakepit's benchmark harness: it measures snakepit
// against the alternatives and against bare kernel interfaces, side by side
// in one run, and checks the project's performance targets. Run it through
// test/bench/run.sh, which builds everything and cleans up.
//
//	spbench all [--quick] --snakepit BIN --out DIR ...   the whole harness
//	spbench group NAME ...                               one group (JSON on stdout)
//	spbench rmdirloop DIR | killloop DIR                 the gc baselines
//
// Every figure is a ratio against a baseline measured in the same run,
// interleaved with it (methods rotate their order each repetition), and is
// reported as the median with min and max.
package main

import "os"

func main() { os.Exit(realMain(os.Args[1:])) }
