package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/snakepit/snakepit/inventory"
	"github.com/snakepit/snakepit/runid"
)

func init() {
	register(&command{
		name:         "gc",
		summary:      "tear down runs whose supervisor died, and kill orphaned marked processes",
		synopsis:     "[--dry-run] [--json] [OPTION]...",
		exits:        []int{exitInvalidID, exitPermission, exitFailure},
		interspersed: true,
		define: func(fs *flagSet) action {
			o := inventory.GCOptions{Grace: 500 * time.Millisecond, MinAge: inventory.DefaultGCMinAge}
			var asJSON bool
			var parents, ids []string
			fs.Bool("dry-run", 'n', "report what would be removed and killed; change nothing", &o.DryRun)
			fs.Bool("json", 0, "print the report as JSON", &asJSON)
			fs.Duration("grace", 0, "SIGTERM-to-SIGKILL grace for stale runs and orphaned processes", &o.Grace)
			fs.Duration("min-age", 0, "remove empty run cgroups without a record only when older than this", &o.MinAge)
			fs.Bool("no-scan", 0, "skip the /proc scan for marked processes", &o.NoScan)
			fs.Strings("cgroup-parent", 0, "DIR", "extra cgroup parent to search (repeatable)", &parents).Comp("dir")
			fs.Bool("only-parents", 0, "search only the --cgroup-parent directories, not the known parents", &o.OnlyParents)
			fs.Strings("run-id", 0, "ID", "only look at this run (repeatable); default: every run", &ids)
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				if len(args) > 0 {
					return usageError("gc: unexpected arguments")
				}
				if o.OnlyParents && len(parents) == 0 {
					return usageError("--only-parents needs --cgroup-parent (it would search nothing)")
				}
				o.Parents, o.RunIDs = parents, ids
				return cmdGC(ctx, o, ids, asJSON, stdout)
			}
		},
	})
}

func cmdGC(ctx context.Context, o inventory.GCOptions, ids []string, asJSON bool, stdout io.Writer) error {
	for _, id := range ids {
		if err := runid.Validate(id); err != nil {
			return err
		}
	}
	rep, err := inventory.GC(ctx, o)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printGC(stdout, rep)
	}
	if err != nil {
		return err
	}
	for _, it := range rep.Items {
		if it.Action == inventory.GCFailed {
			return codedError{exitFailure, fmt.Errorf("gc: some items failed")}
		}
	}
	return nil
}

func printGC(w io.Writer, rep inventory.GCReport) {
	runs, procs := 0, 0
	for _, it := range rep.Items {
		var what string
		switch it.Kind {
		case "cgroup":
			what = fmt.Sprintf("run %s cgroup %s", it.ID, it.Cgroup)
			if it.Procs > 0 {
				what += fmt.Sprintf(" (%d processes)", it.Procs)
			}
		case "record":
			what = fmt.Sprintf("run %s record", it.ID)
			if it.Procs > 0 {
				what += fmt.Sprintf(" (%d processes)", it.Procs)
			}
		case "process":
			what = fmt.Sprintf("pid %d of run %s: %s", it.PID, it.ID, it.Cmdline)
		}
		line := fmt.Sprintf("%-12s %s: %s", it.Action, what, it.Reason)
		if it.Outcome != "" && it.Kind == "process" {
			line += " [" + it.Outcome + "]"
		}
		if it.Error != "" {
			line += ": " + it.Error
		}
		fmt.Fprintln(w, line)
		switch it.Action {
		case inventory.GCRemoved, inventory.GCWouldRemove:
			runs++
		case inventory.GCKilled, inventory.GCWouldKill:
			procs++
		}
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "gc: %s %d stale runs and %d orphaned processes; %d live runs untouched (%.1f ms)\n",
		verb, runs, procs, rep.Live, rep.DurationMS)
}
