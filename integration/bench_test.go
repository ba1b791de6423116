package integration

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Benchmarks of one member process (fsync on, as in production) driven by
// 100 concurrent clients over gRPC, spread over 10 connections like etcd's
// own benchmark tool with --conns=10 --clients=100:
//
//	go test -run '^$' -bench . -benchtime 5000x ./integration/
//
// When bin/etcd exists the same benchmark runs against etcd 3.7.3 as well,
// for a side-by-side number on the same machine.
const (
	benchClients = 100
	benchConns   = 10
)

func BenchmarkPut(b *testing.B) {
	forEachBenchServer(b, func(b *testing.B, conns []*clientv3.Client) {
		val := make([]byte, 256)
		runConcurrent(b, conns, func(ctx context.Context, c *clientv3.Client, i int) error {
			_, err := c.Put(ctx, fmt.Sprintf("bench/%08d", i), string(val))
			return err
		})
	})
}

func BenchmarkRangeLinearizable(b *testing.B) {
	forEachBenchServer(b, func(b *testing.B, conns []*clientv3.Client) {
		for i := 0; i < 1000; i++ {
			if _, err := conns[0].Put(context.Background(), fmt.Sprintf("bench/%08d", i), "value"); err != nil {
				b.Fatal(err)
			}
		}
		runConcurrent(b, conns, func(ctx context.Context, c *clientv3.Client, i int) error {
			_, err := c.Get(ctx, fmt.Sprintf("bench/%08d", i%1000))
			return err
		})
	})
}

func forEachBenchServer(b *testing.B, fn func(b *testing.B, conns []*clientv3.Client)) {
	servers := []struct{ name, bin string }{{"meshetcd", bins.meshetcd}}
	if bins.etcd != "" {
		servers = append(servers, struct{ name, bin string }{"etcd", bins.etcd})
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			p := StartProc(b, ProcOptions{Bin: s.bin})
			conns := make([]*clientv3.Client, benchConns)
			for i := range conns {
				conns[i] = newClient(b, p.Endpoint)
			}
			fn(b, conns)
		})
	}
}

// runConcurrent spreads b.N operations over benchClients goroutines and
// reports throughput and latency percentiles.
func runConcurrent(b *testing.B, conns []*clientv3.Client, op func(ctx context.Context, c *clientv3.Client, i int) error) {
	var next atomic.Int64
	lat := make([][]time.Duration, benchClients)
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < benchClients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				err := op(ctx, c, i)
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
