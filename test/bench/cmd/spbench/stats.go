package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Result is one row of the results table: one method measured in one case,
// next to the baseline measured in the same run (interleaved with it).
type Result struct {
	// Group is the section of the table: spawn, teardown, gc, guardian,
	// daemon, memory.
	Group string `json:"group"`
	// Case says what was measured ("/bin/true", "N=100 setsid", ...).
	Case string `json:"case"`
	// Method is how ("plain os/exec", "snakepit gc", ...).
	Method string `json:"method"`
	// Baseline names the method this row's ratio is against; empty when
	// this row is the baseline.
	Baseline string `json:"baseline,omitempty"`
	// Unit is "ms", "MiB" or "ops/s".
	Unit string `json:"unit"`
	// HigherIsBetter is set for throughputs.
	HigherIsBetter bool    `json:"higher_is_better,omitempty"`
	Count          int     `json:"count"`
	Median         float64 `json:"median"`
	Min            float64 `json:"min"`
	Max            float64 `json:"max"`
	// Ratio is Median / the baseline's Median (1 for the baseline itself).
	Ratio float64 `json:"ratio"`
	// Note is shown next to the row (survivors, placement, ...).
	Note string `json:"note,omitempty"`
	// Extra holds secondary figures (e.g. time to empty vs to removed).
	Extra map[string]float64 `json:"extra,omitempty"`
	// Samples are the raw measurements, in the order taken.
	Samples []float64 `json:"samples,omitempty"`
	// Error, when set, says why this row could not be measured.
	Error string `json:"error,omitempty"`
}

// GroupOutput is what a group child prints (JSON) for the orchestrator.
type GroupOutput struct {
	Results []Result `json:"results"`
	Notes   []string `json:"notes,omitempty"`
}

// series is the samples of one method.
type series struct {
	method  string
	samples []float64
	note    string
	extra   map[string]float64
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summarize turns a series into a Result (without ratio).
func summarize(group, cas, unit string, s series) Result {
	r := Result{Group: group, Case: cas, Method: s.method, Unit: unit, Count: len(s.samples),
		Samples: s.samples, Note: s.note, Extra: s.extra}
	if len(s.samples) == 0 {
		r.Error = "no samples"
		return r
	}
	r.Median = median(s.samples)
	r.Min, r.Max = slices.Min(s.samples), slices.Max(s.samples)
	return r
}

// caseResults makes the rows of one case: the baseline first (ratio 1),
// then each other series with its ratio against the baseline's median.
func caseResults(group, cas, unit string, base series, others ...series) []Result {
	b := summarize(group, cas, unit, base)
	if b.Error == "" {
		b.Ratio = 1
	}
	out := []Result{b}
	for _, s := range others {
		r := summarize(group, cas, unit, s)
		r.Baseline = base.method
		if r.Error == "" && b.Error == "" && b.Median > 0 {
			r.Ratio = r.Median / b.Median
		}
		out = append(out, r)
	}
	return out
}

// rotate returns the order in which n methods run in repetition i: each
// method takes each position equally often, so neither warm caches nor a
// load spike favour one of them.
func rotate(n, i int) []int {
	out := make([]int, n)
	for k := range out {
		out[k] = (k + i) % n
	}
	return out
}

// method is one way of doing what a case measures. run performs one
// repetition (its own setup excluded from the figure it returns) and may
// return secondary per-repetition figures (survivors, ...).
type method struct {
	name string
	run  func(rep int) (float64, map[string]float64, error)
}

// runCase runs reps repetitions of every method, interleaved and in
// rotating order, after warm warm-up repetitions that are not recorded.
// Per-repetition extras are summarized as <name>_median and <name>_max.
func runCase(ctx context.Context, reps, warm int, methods []method) ([]series, error) {
	out := make([]series, len(methods))
	extras := make([]map[string][]float64, len(methods))
	for k, m := range methods {
		out[k].method = m.name
		extras[k] = map[string][]float64{}
	}
	for i := -warm; i < reps; i++ {
		for _, k := range rotate(len(methods), i+warm) {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			v, ex, err := methods[k].run(i)
			if err != nil {
				return out, fmt.Errorf("%s: %w", methods[k].name, err)
			}
			if i < 0 {
				continue
			}
			out[k].samples = append(out[k].samples, v)
			for name, x := range ex {
				extras[k][name] = append(extras[k][name], x)
			}
		}
	}
	for k := range out {
		for name, xs := range extras[k] {
			if out[k].extra == nil {
				out[k].extra = map[string]float64{}
			}
			out[k].extra[name+"_median"] = median(xs)
			out[k].extra[name+"_max"] = slices.Max(xs)
		}
	}
	return out, nil
}
