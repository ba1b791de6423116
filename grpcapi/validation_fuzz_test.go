package grpcapi

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// FuzzValidatedTxn checks the promise validation makes to the applier: any
// txn that passes checkTxnRequest and checkTxnIntervals executes on etcd's
// MVCC without panicking (etcd's txn.Txn panics on a write txn that fails
// half-way, which would take the member down). It also checks that
// validation itself never panics on arbitrary input.
func FuzzValidatedTxn(f *testing.F) {
	seeds := []*pb.TxnRequest{
		{},
		{Compare: []*pb.Compare{cmp("a")}, Success: []*pb.RequestOp{put("a"), get("b")}, Failure: []*pb.RequestOp{del("a", "c")}},
		{Success: []*pb.RequestOp{put("a"), put("a")}},
		{Success: []*pb.RequestOp{del("a", "z"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("m")}})}},
		{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("x")}, Failure: []*pb.RequestOp{put("x")}}), get("x")}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 99}}}, put("b")}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}}}}},
		{Success: []*pb.RequestOp{{}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if err := proto.Unmarshal(data, r); err != nil {
			t.Skip()
		}
		const maxOps = 8
		if checkTxnRequest(r, maxOps) != nil || checkTxnIntervals(r) != nil {
			return
		}
		lg := zap.NewNop()
		be := backend.NewDefaultBackend(lg, filepath.Join(t.TempDir(), "db"))
		defer be.Close()
		s := mvcc.NewStore(lg, be, &lease.FakeLessor{}, mvcc.StoreConfig{})
		defer s.Close()
		// Errors are fine (a missing lease, a future revision); panics are not.
		_, _, _ = txn.Txn(context.Background(), lg, r, false, s, &lease.FakeLessor{}, false)
	})
}

// FuzzBranchIntervals checks that checkTxnIntervals' shortcut for branches
// of only puts and ranges agrees with the full check (etcd's algorithm).
func FuzzBranchIntervals(f *testing.F) {
	for _, s := range []*pb.TxnRequest{
		{Success: []*pb.RequestOp{put("a"), put("a")}},
		{Success: []*pb.RequestOp{put("a"), get("a"), put("b")}},
		{Success: []*pb.RequestOp{del("a", "c"), put("b")}},
	} {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &pb.TxnRequest{}
		if err := proto.Unmarshal(data, r); err != nil {
			t.Skip()
		}
		for _, b := range [][]*pb.RequestOp{r.Success, r.Failure} {
			_, _, want := checkIntervals(b)
			if got := checkBranchIntervals(b); (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
				t.Fatalf("checkBranchIntervals = %v, checkIntervals = %v for %v", got, want, b)
			}
		}
	})
}
