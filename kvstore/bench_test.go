package kvstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// benchClients is the number of concurrent callers, like a loaded server.
const benchClients = 100

// runConcurrently spreads b.N operations over benchClients goroutines.
func runConcurrently(b *testing.B, op func(ctx context.Context, i int64) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, benchClients)
	ctx := context.Background()
	b.ResetTimer()
	for w := 0; w < benchClients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(ctx, i); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPut measures proposal throughput with fsync on (etcd's default).
func BenchmarkPut(b *testing.B) {
	s := startServer(b, testConfig(b, b.TempDir()))
	defer s.Stop()
	val := make([]byte, 256)
	runConcurrently(b, func(ctx context.Context, i int64) error {
		_, err := s.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("key%d", i%10000)), Value: val})
		return err
	})
}

// BenchmarkLinearizableRange measures ReadIndex-batched reads.
func BenchmarkLinearizableRange(b *testing.B) {
	s := startServer(b, testConfig(b, b.TempDir()))
	defer s.Stop()
	for i := 0; i < 100; i++ {
		mustPut(b, s, fmt.Sprintf("key%d", i), "value")
	}
	runConcurrently(b, func(ctx context.Context, i int64) error {
		_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte(fmt.Sprintf("key%d", i%100))})
		return err
	})
}
