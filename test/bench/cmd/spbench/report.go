package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Machine describes where the figures were taken.
type Machine struct {
	CPUs        int    `json:"nproc"`
	CPUModel    string `json:"cpu_model"`
	Kernel      string `json:"kernel"`
	CgroupMode  string `json:"cgroup_mode"`
	CgroupMount string `json:"cgroup_mount"`
	MemTotal    string `json:"mem_total"`
	GoVersion   string `json:"go_version"`
	SystemdPID1 bool   `json:"systemd_pid1"`
	LoadStart   string `json:"loadavg_start"`
	LoadEnd     string `json:"loadavg_end"`
}

// Report is the whole results file.
type Report struct {
	Started  string   `json:"started"`
	Duration string   `json:"duration"`
	Command  string   `json:"command"`
	Commit   string   `json:"commit,omitempty"`
	Quick    bool     `json:"quick"`
	Machine  Machine  `json:"machine"`
	Results  []Result `json:"results"`
	Targets  []Target `json:"targets"`
	Notes    []string `json:"notes,omitempty"`
}

var groupTitles = []struct{ group, title string }{
	{"spawn", "Spawn"},
	{"teardown", "Teardown until empty and removed"},
	{"gc", "Stale-run cleanup"},
	{"guardian", "Guardian reaction"},
	{"daemon", "Daemon API"},
	{"memory", "Memory (VmRSS)"},
}

func fmtValue(unit string, v float64) string {
	switch unit {
	case "ms":
		return fmtMs(v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case "ops/s":
		return fmt.Sprintf("%.0f /s", v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// table renders rows as a markdown table with padded columns, readable in
// a terminal as it is.
func table(header []string, rows [][]string) string {
	w := make([]int, len(header))
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			if n := utf8.RuneCountInString(c); n > w[i] {
				w[i] = n
			}
		}
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for i, c := range r {
			b.WriteString(" " + c + strings.Repeat(" ", w[i]-utf8.RuneCountInString(c)) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// groupTable renders one section of the results.
func groupTable(rs []Result, group string) string {
	var rows [][]string
	prevCase := ""
	for _, r := range rs {
		if r.Group != group {
			continue
		}
		cas := r.Case
		if cas == prevCase {
			cas = ""
		}
		prevCase = r.Case
		if r.Error != "" {
			rows = append(rows, []string{escapeCell(cas), escapeCell(r.Method), "-", "-", "-", "-", "-",
				escapeCell("not measurable: " + oneLine(r.Error))})
			continue
		}
		ratio := fmt.Sprintf("%.2fx", r.Ratio)
		if r.Baseline == "" {
			ratio = "baseline"
		}
		rows = append(rows, []string{escapeCell(cas), escapeCell(r.Method), fmtValue(r.Unit, r.Median),
			fmtValue(r.Unit, r.Min), fmtValue(r.Unit, r.Max), ratio, strconv.Itoa(r.Count), escapeCell(r.Note)})
	}
	if len(rows) == 0 {
		return ""
	}
	return table([]string{"case", "method", "median", "min", "max", "ratio", "n", "note"}, rows)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func targetsTable(ts []Target) string {
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{t.Status, escapeCell(t.Name), escapeCell(t.Want), escapeCell(oneLine(t.Got))})
	}
	return table([]string{"status", "target", "want", "got"}, rows)
}

func machineLines(rep *Report) []string {
	m := rep.Machine
	mode := "quick mode: fewer repetitions, N <= 100"
	if !rep.Quick {
		mode = "full mode"
	}
	l := []string{
		fmt.Sprintf("- Command: `%s` (%s), started %s, took %s", rep.Command, mode, rep.Started, rep.Duration),
		fmt.Sprintf("- Machine: %d CPUs (%s), %s RAM, Linux %s", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel),
		fmt.Sprintf("- cgroup: %s (cgroup2 at %s); systemd PID 1: %v", m.CgroupMode, m.CgroupMount, m.SystemdPID1),
		fmt.Sprintf("- Load average at start / end: %s / %s%s", m.LoadStart, m.LoadEnd, loadWarning(m)),
		fmt.Sprintf("- %s", m.GoVersion),
	}
	if rep.Commit != "" {
		l = append(l, fmt.Sprintf("- Commit: %s", rep.Commit))
	}
	return l
}

// markdown renders the report: machine, targets, then every section.
// img, if set, is the plot embedded after the teardown section.
func markdown(rep *Report, img string) string {
	var b strings.Builder
	b.WriteString(strings.Join(machineLines(rep), "\n") + "\n\n")
	b.WriteString("### Targets\n\n")
	b.WriteString(targetsTable(rep.Targets) + "\n")
	for _, g := range groupTitles {
		t := groupTable(rep.Results, g.group)
		if t == "" {
			continue
		}
		b.WriteString("### " + g.title + "\n\n" + t + "\n")
		if g.group == "teardown" && img != "" {
			b.WriteString("![teardown time vs N per method, log axes](" + img + ")\n\n")
		}
	}
	if len(rep.Notes) > 0 {
		b.WriteString("### Notes\n\n")
		for _, n := range rep.Notes {
			b.WriteString("- " + oneLine(n) + "\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// terminal renders the report for the terminal.
func terminal(rep *Report) string {
	var b strings.Builder
	b.WriteString("\n" + strings.Join(machineLines(rep), "\n") + "\n")
	for _, g := range groupTitles {
		if t := groupTable(rep.Results, g.group); t != "" {
			b.WriteString("\n== " + g.title + "\n" + t)
		}
	}
	for _, n := range rep.Notes {
		b.WriteString("\nnote: " + oneLine(n))
	}
	b.WriteString("\n\n== Targets\n" + targetsTable(rep.Targets))
	return b.String()
}

// Markers around the generated part of docs/BENCHMARKS.md.
const (
	docsBegin = "<!-- spbench:begin (generated by test/bench/run.sh; edits between the markers are overwritten) -->"
	docsEnd   = "<!-- spbench:end -->"
)

// spliceDocs replaces the generated part of the docs page with md.
func spliceDocs(path, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := docsBegin + "\n\n" + md + docsEnd + "\n"
	i := strings.Index(s, docsBegin)
	j := strings.Index(s, docsEnd)
	if i >= 0 && j > i {
		s = s[:i] + block + strings.TrimPrefix(s[j+len(docsEnd):], "\n")
	} else {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// plotFiles writes the gnuplot data and script for the teardown plot:
// time vs N per method, flat and setsid'd trees side by side, log axes,
// medians with min-max bars; the guardian's reaction is drawn in the flat
// panel. It returns the script's path.
func plotFiles(rep *Report, dir, png string) (string, error) {
	methods := []struct{ group, method, label string }{
		{"teardown", tdBare, "bare cgroup.kill + wait + rmdir"},
		{"teardown", tdSnakepit, "snakepit Run.Teardown"},
		{"teardown", tdPOSIX, "POSIX fallback (--no-cgroup)"},
		{"teardown", tdPgid, "kill(-pgid) (leaves setsid'd processes)"},
		{"guardian", guardianRow, "guardian: SIGKILLed supervisor -> gone"},
	}
	var data strings.Builder
	var plots [2][]string
	idx := 0
	for pi, sh := range []string{"flat", "setsid"} {
		for _, m := range methods {
			if m.group == "guardian" && sh != "flat" {
				continue
			}
			var lines []string
			for _, n := range []int{10, 100, 1000} {
				for _, r := range rep.Results {
					if r.Group == m.group && r.Method == m.method && r.Case == fmt.Sprintf("N=%d %s", n, sh) && r.Error == "" {
						lines = append(lines, fmt.Sprintf("%d %g %g %g", n, r.Median, r.Min, r.Max))
					}
				}
			}
			if len(lines) == 0 {
				continue
			}
			fmt.Fprintf(&data, "# %s %s\n%s\n\n\n", sh, m.label, strings.Join(lines, "\n"))
			plots[pi] = append(plots[pi], fmt.Sprintf("'teardown.dat' index %d using 1:2:3:4 with yerrorlines title \"%s\"", idx, m.label))
			idx++
		}
	}
	if idx == 0 {
		return "", fmt.Errorf("no teardown results to plot")
	}
	if err := os.WriteFile(filepath.Join(dir, "teardown.dat"), []byte(data.String()), 0o644); err != nil {
		return "", err
	}
	var gp strings.Builder
	fmt.Fprintf(&gp, `set terminal png size 1200,600 font ",10"
set output '%s'
set logscale xy
set xrange [7:1400]
set xtics (10, 100, 1000)
set xlabel "processes in the run (N)"
set ylabel "time until all gone (ms, median; bars: min-max)"
set grid
set key below box
set bmargin 10
set multiplot layout 1,2 title "Teardown until empty (and removed), %s"
`, png, strings.ReplaceAll(rep.Machine.CPUModel+fmt.Sprintf(", %d CPUs, Linux %s", rep.Machine.CPUs, rep.Machine.Kernel), `"`, ""))
	for pi, sh := range []string{"flat tree", "setsid'd tree"} {
		fmt.Fprintf(&gp, "set title \"%s\"\n", sh)
		if len(plots[pi]) == 0 {
			gp.WriteString("plot 1/0 notitle\n")
			continue
		}
		gp.WriteString("plot " + strings.Join(plots[pi], ", \\\n     ") + "\n")
	}
	gp.WriteString("unset multiplot\n")
	script := filepath.Join(dir, "teardown.gp")
	return script, os.WriteFile(script, []byte(gp.String()), 0o644)
}

// loadWarning flags a run taken on a machine busier than its CPU count:
// the absolute times are then inflated (ratios hold up better).
func loadWarning(m Machine) string {
	for _, l := range []string{m.LoadStart, m.LoadEnd} {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && m.CPUs > 0 && v > float64(m.CPUs) {
			return fmt.Sprintf(" — **busier than its %d CPUs: absolute times are inflated, read the ratios**", m.CPUs)
		}
	}
	return ""
}
