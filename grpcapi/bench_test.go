package grpcapi

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// stubTxnStore answers write txns at once with a canned response, so that
// BenchmarkTxnPut measures what this package and gRPC add per request
// (interceptors, metrics, validation, quota, header), not raft or MVCC.
type stubTxnStore struct{ *fakeStore }

func (stubTxnStore) Txn(context.Context, *pb.TxnRequest) (*pb.TxnResponse, error) {
	return &pb.TxnResponse{
		Header:    &pb.ResponseHeader{Revision: 2},
		Succeeded: true,
		Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponsePut{
			ResponsePut: &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 2}},
		}}},
	}, nil
}

// BenchmarkTxnPut is the bench harness's txn-put request (one put of a
// 256-byte value, 8-byte key) through the gRPC server over loopback TCP,
// many requests in flight on one connection.
func BenchmarkTxnPut(b *testing.B) {
	addr := serveForTest(b, stubTxnStore{newFakeStore(b)}, Config{})
	kv := pb.NewKVClient(dialClient(b, addr).ActiveConnection())
	req := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
		RequestPut: &pb.PutRequest{Key: []byte("key00001"), Value: make([]byte, 256)},
	}}}}
	ctx := context.Background()
	if _, err := kv.Txn(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			if _, err := kv.Txn(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestCountClientRequestCache: the last-version cache must count every
// request under its own version, also when versions alternate.
func TestCountClientRequestCache(t *testing.T) {
	m := newGRPCMetrics()
	get := func(kind, ver string) float64 {
		var out dto.Metric
		if err := m.clientRequests.WithLabelValues(kind, ver).Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetCounter().GetValue()
	}
	a0, b0, s0 := get("unary", "cache-a"), get("unary", "cache-b"), get("stream", "cache-a")
	for _, v := range []string{"cache-a", "cache-a", "cache-b", "cache-a", "cache-b", "cache-b"} {
		m.countClientRequest("unary", v)
	}
	m.countClientRequest("stream", "cache-a")
	if a, b, s := get("unary", "cache-a")-a0, get("unary", "cache-b")-b0, get("stream", "cache-a")-s0; a != 3 || b != 3 || s != 1 {
		t.Fatalf("counted unary a=%v b=%v, stream a=%v; want 3, 3, 1", a, b, s)
	}
}
