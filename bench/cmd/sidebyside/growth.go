package main

import (
	"fmt"
	"io"
)

// growthAxis is one line of the "how cost grows" table: the workloads that
// differ only in what grows, smallest first.
type growthAxis struct {
	name      string
	workloads []string
	labels    []string // what each workload's size is, e.g. "256 B"
}

var growthAxes = []growthAxis{
	{"watchers on one key", []string{"watch-10", "watch-latency", "watch-10k"}, []string{"10", "100", "10,000"}},
	// The sizes of fill-1m and put-at-1m follow fill-1m's total (a tenth with --quick).
	{"key count", []string{"put-keys-1", "put-100", fillWorkload, "put-at-1m"}, []string{"1 key", "100,000-key space", "", ""}},
	{"value size", []string{"put-100", "put-64k", "put-1m"}, []string{"256 B", "64 KiB", "1 MiB"}},
}

// writeGrowthTable writes the growth table from the summary rows, one line
// per workload of every axis that ran (medians, and meshetcd/etcd ratios).
// It writes nothing when no growth workload ran.
func writeGrowthTable(w io.Writer, rows []row, totals map[string]int, baseName, candName string) {
	filled := fmt.Sprintf("%d keys", totals[fillWorkload])
	find := func(workload, name string) *row {
		for i := range rows {
			if rows[i].m.workload == workload && rows[i].m.name == name {
				return &rows[i]
			}
		}
		return nil
	}
	ran := func(workload string) bool { return find(workload, "peak RSS") != nil }
	any := false
	for _, w := range growthWorkloads {
		any = any || ran(w.name)
	}
	if !any {
		return
	}
	fmt.Fprintf(w, "\n## How cost grows\n\n")
	fmt.Fprintf(w, "Medians over the rounds; ratio = %s / %s. Throughput in req/s (watch rows are paced at %d puts/s: p99 is put→event latency).\n\n", candName, baseName, watchRate)
	fmt.Fprintf(w, "| grows | size | workload | %s req/s | %s req/s | ratio ↑ | p99 ratio ↓ | %s peak RSS MiB | %s peak RSS MiB | ratio ↓ |\n", baseName, candName, baseName, candName)
	fmt.Fprintf(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	cells := func(r *row) (string, string, string) {
		if r == nil {
			return "–", "–", "–"
		}
		return fmtNum(r.baseMed), fmtNum(r.candMed), fmtRatio(r.ratio)
	}
	for _, a := range growthAxes {
		for i, wl := range a.workloads {
			if !ran(wl) {
				continue
			}
			tb, tc, tr := cells(find(wl, "throughput"))
			_, _, pr := cells(find(wl, "latency p99"))
			rb, rc, rr := cells(find(wl, "peak RSS"))
			label := a.labels[i]
			switch wl {
			case fillWorkload:
				label = "0 → " + filled
			case "put-at-1m":
				label = filled
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a.name, label, wl, tb, tc, tr, pr, rb, rc, rr)
		}
	}
	if r := find("(at rest after "+fillWorkload+")", "RSS"); r != nil {
		rb, rc, rr := cells(r)
		fmt.Fprintf(w, "| at rest | %s written | idle %v after put-at-1m | | | | | %s | %s | %s |\n", filled, restSettle, rb, rc, rr)
	}
}
