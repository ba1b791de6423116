package main

import (
	"strings"
	"testing"
)

const meshBenchOutput = `goos: linux
pkg: github.com/meshetcd/meshetcd/meshconn
BenchmarkDatagramThroughput/direct/plain/100B-2    	  200000	      1151 ns/op	  86.89 MB/s	         0 lost/op	         0 stalls	         1.151 µs/op
BenchmarkDatagramThroughput/direct/encrypted/100B-2         	  200000	      1374 ns/op	  72.77 MB/s	         0 lost/op	         0 stalls	         1.374 µs/op
BenchmarkDatagramThroughput/direct/plain/100B-2    	  200000	      1151 ns/op	  100.0 MB/s	         0 lost/op	         0 stalls	         1.151 µs/op
BenchmarkDatagramThroughput/direct/encrypted/100B-2         	  200000	      1374 ns/op	  95.0 MB/s	         0 lost/op	         0 stalls	         1.374 µs/op
PASS
pkg: github.com/meshetcd/meshetcd/integration
BenchmarkCluster3Put/connected-2         	    3000	    200000 ns/op
BenchmarkCluster3Put/leader-follower-link-cut-2         	    3000	    250000 ns/op
--- BENCH: BenchmarkCluster3Put/leader-follower-link-cut-2
BenchmarkCluster3Put/connected-2         	    3000	   1414572 ns/op	       117.9 p50-ms	       598.6 p99-ms	       5000 req/s
BenchmarkCluster3Put/leader-follower-link-cut-2         	    3000	   1414572 ns/op	       117.9 p50-ms	       598.6 p99-ms	       4000 req/s
BenchmarkSnapshotCatchUp/meshetcd-2         	       1	8330045765 ns/op	        56.70 backend-MB/s	       400.5 backend-MiB	         4.000 s/catch-up
BenchmarkSnapshotCatchUp/etcd-2         	       1	8330045765 ns/op	        56.70 backend-MB/s	       400.5 backend-MiB	         5.000 s/catch-up
ok  	github.com/meshetcd/meshetcd/integration	30.1s
`

func TestParseGoBench(t *testing.T) {
	s := parseGoBench(strings.NewReader(meshBenchOutput))
	got := s["BenchmarkDatagramThroughput/direct/encrypted/100B"]["MB/s"]
	if len(got) != 2 || got[0] != 72.77 || got[1] != 95 {
		t.Fatalf("encrypted MB/s = %v", got)
	}
	// req/s from ns/op, or as reported.
	if rps := s["BenchmarkCluster3Put/connected"]["req/s"]; len(rps) != 2 || rps[0] != 5000 || rps[1] != 5000 {
		t.Fatalf("connected req/s = %v", rps)
	}
	var b strings.Builder
	writeMeshTable(&b, s, 2)
	md := b.String()
	// Per-repetition ratios 72.77/86.89 = 0.84 and 95/100 = 0.95; median 0.89.
	for _, want := range []string{
		"| direct link, 100 B datagrams: encrypted / plaintext | 83.9 MB/s | 93.4 MB/s | 0.89 | 0.84–0.95 | ≥ 0.90 |",
		"| 3 members, put: leader–follower link cut / connected | 4000 req/s | 5000 req/s | 0.80 | 0.80–0.80 | ≥ 0.90 |",
		"| one relay, 4 KiB datagrams: encrypted / plaintext | – MB/s | – MB/s | – | – | ≥ 0.80 |",
		"| snapshot catch-up of a ~390 MiB backend: meshetcd / etcd (time) | 4.00 s/catch-up | 5.00 s/catch-up | 0.80 | 0.80–0.80 | ≤ 1.00 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
