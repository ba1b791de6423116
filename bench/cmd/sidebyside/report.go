package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// runResult is one workload run against one system in one round.
type runResult struct {
	Round     int
	Order     int // position in the round's sequence (1 = first)
	System    string
	Workload  string
	Total     int
	OK        bool
	Err       string
	RPS       float64 // successful requests per second (watch-latency: watch events/s)
	P50, P99  float64 // seconds
	Avg       float64
	Errors    int // failed requests reported by the tool
	Requests  int // successful requests
	Wall      float64
	ServerCPU float64 // seconds, summed over members, during the run
	PeakRSSKB int64   // max over members of VmHWM during the run (lifetime if RSSReset is false)
	RSSReset  bool
	ClientCPU float64
	Load1     float64 // 1-minute load average before the run
}

// roundResult is one system's server-process totals for a round.
type roundResult struct {
	Round     int
	System    string
	OK        bool
	Err       string
	ReadySec  float64 // start to ready (leader, all members, seed write)
	CPU       float64 // seconds, summed over members, whole round
	PeakRSSKB int64
	// RestRSSKB is the largest member's VmRSS restSettle after the round's
	// last run, when that round wrote fill-1m's keys (0 otherwise).
	RestRSSKB int64
	Members   string // per-member CPU and VmHWM (VmHWM since the last per-run reset)
}

// metric is one row of the summary table.
type metric struct {
	workload, name, unit string
	higherBetter         bool
	get                  func(r runResult) (float64, bool)
	getRound             func(r roundResult) (float64, bool)
}

func metricsFor(ws []*workload) []metric {
	var ms []metric
	for _, w := range ws {
		if !w.paced {
			ms = append(ms, metric{workload: w.name, name: "throughput", unit: "req/s", higherBetter: true,
				get: func(r runResult) (float64, bool) { return r.RPS, r.RPS > 0 }})
		}
		ms = append(ms,
			metric{workload: w.name, name: "latency p50", unit: "ms",
				// The tool omits a percentile line whose value is 0 (watch events can
				// arrive before the put's response), so 0 is a valid reading here.
				get: func(r runResult) (float64, bool) { return r.P50 * 1e3, true }},
			metric{workload: w.name, name: "latency p99", unit: "ms",
				get: func(r runResult) (float64, bool) { return r.P99 * 1e3, true }},
			metric{workload: w.name, name: "server CPU / req", unit: "µs",
				get: func(r runResult) (float64, bool) {
					if r.Requests == 0 {
						return 0, false
					}
					return r.ServerCPU / float64(r.Requests) * 1e6, true
				}},
			metric{workload: w.name, name: "peak RSS", unit: "MiB",
				get: func(r runResult) (float64, bool) { return float64(r.PeakRSSKB) / 1024, r.PeakRSSKB > 0 }},
		)
	}
	ms = append(ms,
		metric{workload: "(whole round)", name: "time to ready", unit: "s",
			getRound: func(r roundResult) (float64, bool) { return r.ReadySec, r.ReadySec > 0 }},
		metric{workload: "(whole round)", name: "server CPU", unit: "s",
			getRound: func(r roundResult) (float64, bool) { return r.CPU, r.CPU > 0 }},
		metric{workload: "(whole round)", name: "peak RSS", unit: "MiB",
			getRound: func(r roundResult) (float64, bool) { return float64(r.PeakRSSKB) / 1024, r.PeakRSSKB > 0 }},
	)
	if slices.ContainsFunc(ws, func(w *workload) bool { return w.name == fillWorkload }) {
		ms = append(ms, metric{workload: "(at rest after " + fillWorkload + ")", name: "RSS", unit: "MiB",
			getRound: func(r roundResult) (float64, bool) { return float64(r.RestRSSKB) / 1024, r.RestRSSKB > 0 }})
	}
	return ms
}

// row is one aggregated metric: medians per system and their ratio.
type row struct {
	m                metric
	base, cand       []float64 // per-round values (rounds where the run succeeded)
	ratios           []float64 // cand/base per round where both succeeded
	baseMed, candMed float64
	ratio            float64 // candMed / baseMed
	baseRuns         int     // attempted rounds
	candRuns         int
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func aggregate(ms []metric, runs []runResult, rounds []roundResult, baseName, candName string) []row {
	var rows []row
	for _, m := range ms {
		r := row{m: m}
		perRound := map[int][2]float64{}
		have := map[int][2]bool{}
		add := func(round int, sys string, v float64) {
			i := 0
			if sys == candName {
				i = 1
			}
			pv, ph := perRound[round], have[round]
			pv[i], ph[i] = v, true
			perRound[round], have[round] = pv, ph
			if i == 0 {
				r.base = append(r.base, v)
			} else {
				r.cand = append(r.cand, v)
			}
		}
		if m.get != nil {
			for _, x := range runs {
				if x.Workload != m.workload {
					continue
				}
				if x.System == baseName {
					r.baseRuns++
				} else {
					r.candRuns++
				}
				if v, ok := m.get(x); ok && x.OK {
					add(x.Round, x.System, v)
				}
			}
		} else {
			for _, x := range rounds {
				if x.System == baseName {
					r.baseRuns++
				} else {
					r.candRuns++
				}
				if v, ok := m.getRound(x); ok && x.OK {
					add(x.Round, x.System, v)
				}
			}
		}
		keys := make([]int, 0, len(perRound))
		for k := range perRound {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if h := have[k]; h[0] && h[1] && perRound[k][0] != 0 {
				r.ratios = append(r.ratios, perRound[k][1]/perRound[k][0])
			}
		}
		r.baseMed, r.candMed = median(r.base), median(r.cand)
		r.ratio = r.candMed / r.baseMed
		rows = append(rows, r)
	}
	return rows
}

// fmtNum prints 3 significant digits without exponent for the magnitudes we see.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func spread(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmtNum(slices.Min(xs)) + "–" + fmtNum(slices.Max(xs))
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fmtRatioSpread(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmtRatio(slices.Min(xs)) + "–" + fmtRatio(slices.Max(xs))
}

// medianCell shows the median, and "k/n ok" when some rounds failed.
func medianCell(med float64, vals []float64, runs int) string {
	s := fmtNum(med)
	if len(vals) == 0 && runs > 0 {
		return "FAILED"
	}
	if runs > len(vals) {
		s += fmt.Sprintf(" (%d/%d ok)", len(vals), runs)
	}
	return s
}

func better(m metric) string {
	if m.higherBetter {
		return "↑"
	}
	return "↓"
}

// verdict says whether this run shows a difference for the candidate: every paired
// round must point the same way, there must be at least 3 pairs, and the median ratio
// must be at least 5% away from 1. Otherwise the difference is within this run's noise.
// (With 3 rounds, pure noise still points one way 25% of the time; with 5, 6%.)
func verdict(r row) string {
	if len(r.ratios) < 3 || math.IsNaN(r.ratio) || math.Abs(r.ratio-1) < 0.05 {
		return "~"
	}
	up := slices.Min(r.ratios) > 1
	down := slices.Max(r.ratios) < 1
	switch {
	case (up && r.m.higherBetter) || (down && !r.m.higherBetter):
		return "better"
	case up || down:
		return "worse"
	}
	return "~"
}

func tableCells(rows []row) [][]string {
	var out [][]string
	for _, r := range rows {
		out = append(out, []string{
			r.m.workload,
			fmt.Sprintf("%s (%s) %s", r.m.name, r.m.unit, better(r.m)),
			medianCell(r.baseMed, r.base, r.baseRuns),
			medianCell(r.candMed, r.cand, r.candRuns),
			fmtRatio(r.ratio),
			spread(r.base),
			spread(r.cand),
			fmtRatioSpread(r.ratios),
			verdict(r),
		})
	}
	return out
}

func header(baseName, candName string) []string {
	return []string{"workload", "metric", baseName + " median", candName + " median",
		"ratio " + candName + "/" + baseName, baseName + " min–max", candName + " min–max", "per-round ratio min–max", candName + " is"}
}

func writeMarkdownTable(w io.Writer, rows []row, baseName, candName string) {
	h := header(baseName, candName)
	fmt.Fprintf(w, "| %s |\n", strings.Join(h, " | "))
	seps := make([]string, len(h))
	for i := range seps {
		seps[i] = "---"
		if i >= 2 {
			seps[i] = "---:"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, c := range tableCells(rows) {
		fmt.Fprintf(w, "| %s |\n", strings.Join(c, " | "))
	}
}

func writeTextTable(w io.Writer, rows []row, baseName, candName string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	h := header(baseName, candName)
	fmt.Fprintln(tw, strings.Join(h, "\t")+"\t")
	prev := ""
	for _, c := range tableCells(rows) {
		if c[0] == prev {
			c[0] = ""
		} else {
			prev = c[0]
		}
		fmt.Fprintln(tw, strings.Join(c, "\t")+"\t")
	}
	tw.Flush()
}

func writeSummaryCSV(path string, rows []row, baseName, candName string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"workload", "metric", "unit", "higher_is_better",
		"baseline", "candidate", "baseline_median", "candidate_median", "ratio",
		"baseline_min", "baseline_max", "candidate_min", "candidate_max", "ratio_min", "ratio_max",
		"baseline_ok_rounds", "baseline_rounds", "candidate_ok_rounds", "candidate_rounds", "verdict"})
	for _, r := range rows {
		mm := func(xs []float64) (string, string) {
			if len(xs) == 0 {
				return "", ""
			}
			return f64(slices.Min(xs)), f64(slices.Max(xs))
		}
		bmin, bmax := mm(r.base)
		cmin, cmax := mm(r.cand)
		rmin, rmax := mm(r.ratios)
		_ = cw.Write([]string{r.m.workload, r.m.name, r.m.unit, strconv.FormatBool(r.m.higherBetter),
			baseName, candName, f64(r.baseMed), f64(r.candMed), f64(r.ratio),
			bmin, bmax, cmin, cmax, rmin, rmax,
			strconv.Itoa(len(r.base)), strconv.Itoa(r.baseRuns), strconv.Itoa(len(r.cand)), strconv.Itoa(r.candRuns), verdict(r)})
	}
	cw.Flush()
	return cw.Error()
}

func f64(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func writeRunsCSV(path string, runs []runResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"round", "order", "system", "workload", "total", "ok", "error",
		"req_per_s", "p50_s", "p99_s", "avg_s", "failed_requests", "ok_requests", "wall_s",
		"server_cpu_s", "server_peak_rss_kb", "rss_peak_is_per_run", "client_cpu_s", "load1_before"})
	for _, r := range runs {
		_ = cw.Write([]string{strconv.Itoa(r.Round), strconv.Itoa(r.Order), r.System, r.Workload,
			strconv.Itoa(r.Total), strconv.FormatBool(r.OK), r.Err,
			f64(r.RPS), f64(r.P50), f64(r.P99), f64(r.Avg), strconv.Itoa(r.Errors), strconv.Itoa(r.Requests),
			f64(r.Wall), f64(r.ServerCPU), strconv.FormatInt(r.PeakRSSKB, 10), strconv.FormatBool(r.RSSReset),
			f64(r.ClientCPU), f64(r.Load1)})
	}
	cw.Flush()
	return cw.Error()
}

func writeRoundsCSV(path string, rounds []roundResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"round", "system", "ok", "error", "ready_s", "server_cpu_s", "server_peak_rss_kb", "rest_rss_kb", "members"})
	for _, r := range rounds {
		_ = cw.Write([]string{strconv.Itoa(r.Round), r.System, strconv.FormatBool(r.OK), r.Err,
			f64(r.ReadySec), f64(r.CPU), strconv.FormatInt(r.PeakRSSKB, 10), strconv.FormatInt(r.RestRSSKB, 10), r.Members})
	}
	cw.Flush()
	return cw.Error()
}
