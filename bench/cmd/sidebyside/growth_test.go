package main

import (
	"strings"
	"testing"
)

// TestGrowthTable: the growth table has a line per growth workload that
// ran, with medians and ratios from the summary rows, and the at-rest line;
// without growth workloads it is not written at all.
func TestGrowthTable(t *testing.T) {
	ws := []*workload{workloadByName("put-100"), workloadByName("put-64k"), workloadByName(fillWorkload)}
	var runs []runResult
	var rounds []roundResult
	for r := 1; r <= 3; r++ {
		for _, w := range ws {
			runs = append(runs,
				runResult{Round: r, System: "etcd", Workload: w.name, OK: true, RPS: 1000, P99: 0.010, PeakRSSKB: 100 << 10},
				runResult{Round: r, System: "meshetcd", Workload: w.name, OK: true, RPS: 1200, P99: 0.008, PeakRSSKB: 90 << 10})
		}
		rounds = append(rounds,
			roundResult{Round: r, System: "etcd", OK: true, RestRSSKB: 200 << 10},
			roundResult{Round: r, System: "meshetcd", OK: true, RestRSSKB: 150 << 10})
	}
	rows := aggregate(metricsFor(ws), runs, rounds, "etcd", "meshetcd")
	var b strings.Builder
	writeGrowthTable(&b, rows, map[string]int{fillWorkload: 100000}, "etcd", "meshetcd")
	out := b.String()
	for _, want := range []string{
		"| value size | 256 B | put-100 | 1000 | 1200 | 1.20 | 0.80 | 100 | 90.0 | 0.90 |",
		"| value size | 64 KiB | put-64k | 1000 | 1200 | 1.20 | 0.80 | 100 | 90.0 | 0.90 |",
		"| key count | 0 → 100000 keys | fill-1m |",
		"| at rest | 100000 keys written | idle 10s after put-at-1m | | | | | 200 | 150 | 0.75 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("growth table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "put-1m") {
		t.Errorf("growth table has a line for a workload that did not run:\n%s", out)
	}
	b.Reset()
	writeGrowthTable(&b, aggregate(metricsFor(ws[:1]), runs[:2], nil, "etcd", "meshetcd"), nil, "etcd", "meshetcd")
	if b.Len() != 0 {
		t.Errorf("growth table written without growth workloads:\n%s", b.String())
	}
}
