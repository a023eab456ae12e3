package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/snakepit/snakepit/inventory"
)

func init() {
	register(&command{
		name:         "ps",
		summary:      "list every run on this host (cgroup and POSIX), with owner and process count",
		synopsis:     "[--json] [--tree] [--cgroup-parent=DIR]...",
		exits:        []int{exitPermission, exitFailure},
		interspersed: true,
		define: func(fs *flagSet) action {
			var asJSON, tree bool
			var parents []string
			fs.Bool("json", 0, "print a JSON array of runs", &asJSON)
			fs.Bool("tree", 0, "list each run's processes (pid, command line)", &tree)
			fs.Strings("cgroup-parent", 0, "DIR", "extra cgroup parent to search (repeatable)", &parents).Comp("dir")
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("ps: unexpected arguments")
				}
				return cmdPs(ctx, asJSON, tree, parents, stdout)
			}
		},
	})
}

func cmdPs(ctx context.Context, asJSON, tree bool, parents []string, stdout io.Writer) error {
	runs, err := psRuns(ctx, inventory.ListOptions{Tree: tree, Parents: parents})
	if err != nil {
		return err
	}
	if asJSON {
		if runs == nil {
			runs = []inventory.RunInfo{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(runs)
	}
	printRuns(stdout, runs, tree)
	return nil
}

// psRuns is where ps gets its runs; the daemon client can replace it to ask
// the daemon's socket instead of looking locally.
var psRuns = inventory.ListRuns

func printRuns(w io.Writer, runs []inventory.RunInfo, tree bool) {
	const row = "%-8s %-6s %-8s %-5s %5s %9s %7s %8s  %s\n"
	fmt.Fprintf(w, row, "RUN", "MECH", "OWNER", "ALIVE", "PROCS", "AGE", "MEM", "CPU", "CGROUP")
	for _, r := range runs {
		owner, alive := "-", "?"
		if r.HasRecord {
			owner = fmt.Sprint(r.OwnerPID)
			alive = "no"
			if r.OwnerAlive {
				alive = "yes"
			}
		}
		cg := r.Cgroup
		if cg == "" {
			cg = "-"
		}
		age := time.Duration(r.AgeSeconds * float64(time.Second)).Round(100 * time.Millisecond)
		mem, cpu := statColumns(r.Stats) // jail_linux.go
		fmt.Fprintf(w, row, r.ID, r.Mechanism, owner, alive, fmt.Sprint(r.Procs), age, mem, cpu, cg)
		if tree {
			for _, p := range r.Processes {
				fmt.Fprintf(w, "    %7d  %s\n", p.PID, p.Cmdline)
			}
		}
	}
}
