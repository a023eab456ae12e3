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
	register("gc", command{
		summary: "tear down runs whose supervisor died, and kill orphaned marked processes",
		run:     cmdGC,
	})
}

func cmdGC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o inventory.GCOptions
	var parents stringsFlag
	fs := newFlags("gc", "[--dry-run] [--json]", stderr)
	fs.BoolVar(&o.DryRun, "dry-run", false, "report what would be removed and killed; change nothing")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.DurationVar(&o.Grace, "grace", 500*time.Millisecond, "SIGTERM-to-SIGKILL grace for stale runs and orphaned processes")
	fs.DurationVar(&o.MinAge, "min-age", inventory.DefaultGCMinAge, "remove empty run cgroups without a record only when older than this")
	fs.BoolVar(&o.NoScan, "no-scan", false, "skip the /proc scan for marked processes")
	fs.Var(&parents, "cgroup-parent", "extra cgroup parent to search (repeatable)")
	fs.BoolVar(&o.OnlyParents, "only-parents", false, "search only the --cgroup-parent directories, not the known parents")
	var ids stringsFlag
	fs.Var(&ids, "run-id", "only look at this run (repeatable); default: every run")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("gc: unexpected arguments")
	}
	for _, id := range ids {
		if err := runid.Validate(id); err != nil {
			return err
		}
	}
	o.Parents, o.RunIDs = parents, ids
	rep, err := inventory.GC(ctx, o)
	if *asJSON {
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
