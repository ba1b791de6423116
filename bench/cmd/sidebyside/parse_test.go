package main

import (
	"math"
	"os"
	"testing"
)

// Output shapes copied from etcd's benchmark tool (pkg/v3/report) with --precise.
const putOut = `
Summary:
  Total:	0.271340649 secs.
  Slowest:	0.002789883 secs.
  Fastest:	0.000291447 secs.
  Average:	0.0005400306979999999 secs.
  Stddev:	0.0001761473950752006 secs.
  Requests/sec:	1842.7021599701416

Response time histogram:
  0.000291447 [1]	|
  0.0005412906 [296]	|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎
  0.002789883 [1]	|

Latency distribution:
  10% in 0.00040555 secs.
  25% in 0.000449293 secs.
  50% in 0.000514688 secs.
  75% in 0.000584507 secs.
  90% in 0.000664364 secs.
  95% in 0.00073805 secs.
  99% in 0.001303349 secs.
  99.9% in 2.5e-03 secs.

Error distribution:
  [3]	rpc error: code = Unavailable desc = etcdserver: leader changed
  [1]	context deadline exceeded

`

const rangeOut = "bench with linearizable range\n" + putOut

const watchOut = `
Put summary:

Summary:
  Total:	0.503206191 secs.
  Slowest:	0.028030604 secs.
  Fastest:	0.000722106 secs.
  Average:	0.0019591085599999993 secs.
  Stddev:	0.002989562171093258 secs.
  Requests/sec:	298.08854239633155

Latency distribution:
  50% in 0.00142591 secs.
  99% in 0.028030604 secs.

Watch events summary:

Summary:
  Total:	0.506594955 secs.
  Slowest:	0.004389613 secs.
  Fastest:	0 secs.
  Average:	0.0001 secs.
  Stddev:	0.0002 secs.
  Requests/sec:	29609.777

Response time histogram:
  0 [1]	|
  0.004389613 [2]	|

Latency distribution:
  25% in 1.2e-05 secs.
  50% in 5.7e-05 secs.
  99% in 0.00123 secs.
`

const allFailedOut = `
Error distribution:
  [100]	rpc error: code = Unavailable desc = connection refused
`

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestParsePut(t *testing.T) {
	for _, out := range []string{putOut, rangeOut} {
		blocks, order, err := parseBlocks(out)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pickBlock(blocks, order, "")
		if err != nil {
			t.Fatal(err)
		}
		if !s.HasSummary || !near(s.RPS, 1842.7021599701416) || !near(s.Total, 0.271340649) || !near(s.Average, 0.0005400306979999999) {
			t.Fatalf("summary %+v", s)
		}
		if p, _ := s.p("50"); !near(p, 0.000514688) {
			t.Fatalf("p50 %v", p)
		}
		if p, _ := s.p("99"); !near(p, 0.001303349) {
			t.Fatalf("p99 %v", p)
		}
		if p, _ := s.p("99.9"); !near(p, 0.0025) {
			t.Fatalf("p99.9 %v", p)
		}
		if p, _ := s.p("10"); !near(p, 0.00040555) {
			t.Fatalf("p10 %v", p)
		}
		if s.Errors != 4 || len(s.ErrorKinds) != 2 {
			t.Fatalf("errors %d %v", s.Errors, s.ErrorKinds)
		}
	}
}

func TestParseWatchLatency(t *testing.T) {
	blocks, order, err := parseBlocks(watchOut)
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "put summary" || order[1] != "watch events summary" {
		t.Fatalf("blocks %v", order)
	}
	w, err := pickBlock(blocks, order, "watch events summary")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := w.p("50"); !near(p, 5.7e-05) || !near(w.RPS, 29609.777) || !w.HasSummary {
		t.Fatalf("watch %+v", w)
	}
	if _, ok := w.p("10"); ok {
		t.Fatal("a percentile the tool left out must stay missing")
	}
	if p, _ := blocks["put summary"].p("99"); !near(p, 0.028030604) {
		t.Fatalf("put p99 %v", p)
	}
	if _, err := pickBlock(blocks, order, "nope"); err == nil {
		t.Fatal("missing block must be an error")
	}
}

func TestParseAllFailed(t *testing.T) {
	blocks, order, err := parseBlocks(allFailedOut)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := pickBlock(blocks, order, "")
	if s.HasSummary || s.Errors != 100 {
		t.Fatalf("%+v", s)
	}
	if _, _, err := parseBlocks("panic: boom\n"); err == nil {
		t.Fatal("output without a report must be an error")
	}
}

func TestRoundTotal(t *testing.T) {
	for _, c := range []struct {
		x    float64
		min  int
		want int
	}{{12345, 100, 12000}, {1855, 100, 1900}, {50, 100, 100}, {math.NaN(), 7, 7}, {999999, 1, 1000000}} {
		if got := roundTotal(c.x, c.min); got != c.want {
			t.Errorf("roundTotal(%v,%d)=%d want %d", c.x, c.min, got, c.want)
		}
	}
}

func TestAggregateRatio(t *testing.T) {
	runs := []runResult{
		{Round: 1, System: "etcd", Workload: "put-1", OK: true, RPS: 100},
		{Round: 1, System: "m", Workload: "put-1", OK: true, RPS: 50},
		{Round: 2, System: "etcd", Workload: "put-1", OK: true, RPS: 120},
		{Round: 2, System: "m", Workload: "put-1", OK: false, Err: "x"},
		{Round: 3, System: "etcd", Workload: "put-1", OK: true, RPS: 110},
		{Round: 3, System: "m", Workload: "put-1", OK: true, RPS: 66},
	}
	rows := aggregate(metricsFor([]*workload{workloadByName("put-1")})[:1], runs, nil, "etcd", "m")
	r := rows[0]
	if r.baseMed != 110 || r.candMed != 58 || !near(r.ratio, 58.0/110) || len(r.ratios) != 2 || r.candRuns != 3 {
		t.Fatalf("%+v", r)
	}
	if c := tableCells(rows)[0]; c[3] != "58.0 (2/3 ok)" || c[7] != "0.50–0.60" || c[8] != "~" {
		t.Fatalf("cells %q", c)
	}
}

func TestProcStatSelf(t *testing.T) {
	ps, err := readProcStat(os.Getpid())
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if ps.hwmKB <= 0 || ps.rssKB <= 0 || ps.cpu < 0 {
		t.Fatalf("%+v", ps)
	}
}

func TestVerdict(t *testing.T) {
	up := metric{higherBetter: true}
	down := metric{}
	for _, c := range []struct {
		m      metric
		ratios []float64
		want   string
	}{
		{up, []float64{1.2, 1.3, 1.1}, "better"},
		{down, []float64{1.2, 1.3, 1.1}, "worse"},
		{down, []float64{0.7, 0.8, 0.75}, "better"},
		{up, []float64{0.7, 1.3, 0.75}, "~"},
		{up, []float64{1.2, 1.3}, "~"},
		{up, []float64{1.01, 1.02, 1.03}, "~"},
	} {
		r := row{m: c.m, ratios: c.ratios, ratio: median(c.ratios)}
		if got := verdict(r); got != c.want {
			t.Errorf("%v higherBetter=%v: %s, want %s", c.ratios, c.m.higherBetter, got, c.want)
		}
	}
}
