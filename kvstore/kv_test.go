package kvstore

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

func TestSingleMemberKV(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()
	ctx := testCtx(t)

	// A fresh etcd store starts at revision 1; each write txn adds one.
	if r := mustPut(t, s, "a", "1"); r.Header.Revision != 2 {
		t.Fatalf("first put revision = %d, want 2", r.Header.Revision)
	}
	if r := mustPut(t, s, "b", "2"); r.Header.Revision != 3 {
		t.Fatalf("second put revision = %d, want 3", r.Header.Revision)
	}
	if r := mustPut(t, s, "a", "3"); r.Header.Revision != 4 {
		t.Fatalf("overwrite revision = %d, want 4", r.Header.Revision)
	}
	got := mustGet(t, s, "a")
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "3" || got.Kvs[0].CreateRevision != 2 || got.Kvs[0].ModRevision != 4 || got.Kvs[0].Version != 2 {
		t.Fatalf("get a = %+v", got.Kvs)
	}
	if got.Header.Revision != 4 {
		t.Fatalf("range header revision = %d, want 4", got.Header.Revision)
	}

	// Serializable read of a prefix.
	rr, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Serializable: true})
	if err != nil || rr.Count != 2 {
		t.Fatalf("range [a,c) = %v, %v; want 2 keys", rr, err)
	}

	// Txn with a compare and a nested txn in the success branch.
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("3")}}},
		Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Value: []byte("4"), PrevKv: true}}},
			{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("b"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}},
				Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d"), Value: []byte("5")}}}},
			}}},
		},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a")}}}},
	}
	tr, err := s.Txn(ctx, txn)
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	// Both puts share one revision: a txn is one write transaction.
	if !tr.Succeeded || tr.Header.Revision != 5 {
		t.Fatalf("txn succeeded=%v rev=%d, want true 5", tr.Succeeded, tr.Header.Revision)
	}
	nested := tr.Responses[1].GetResponseTxn()
	if nested == nil || !nested.Succeeded {
		t.Fatalf("nested txn = %+v, want succeeded", tr.Responses[1])
	}
	if d := mustGet(t, s, "d"); len(d.Kvs) != 1 || d.Kvs[0].ModRevision != 5 {
		t.Fatalf("d = %+v, want mod revision 5", d.Kvs)
	}
	// Compare fails: the read-only failure branch runs, no new revision.
	txn.Compare[0].TargetUnion = &pb.Compare_Value{Value: []byte("other")}
	tr, err = s.Txn(ctx, txn)
	if err != nil || tr.Succeeded || tr.Header.Revision != 5 {
		t.Fatalf("second txn = %+v, %v; want failure at rev 5", tr, err)
	}
	// Read-only txn served locally.
	ro, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")}}}}})
	if err != nil || ro.Responses[0].GetResponseRange().Count != 4 {
		t.Fatalf("read-only txn = %+v, %v; want 4 keys", ro, err)
	}

	dr, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("e"), PrevKv: true})
	if err != nil || dr.Deleted != 2 || len(dr.PrevKvs) != 2 || dr.Header.Revision != 6 {
		t.Fatalf("delete [c,e) = %+v, %v; want 2 deleted at rev 6", dr, err)
	}
	// Deleting nothing does not create a revision.
	dr, err = s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("zz")})
	if err != nil || dr.Deleted != 0 || dr.Header.Revision != 6 {
		t.Fatalf("delete missing = %+v, %v; want 0 deleted at rev 6", dr, err)
	}

	cr, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 4, Physical: true})
	if err != nil || cr.Header.Revision != 6 {
		t.Fatalf("compact = %+v, %v", cr, err)
	}
	if _, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 3}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("range at compacted rev: err = %v, want ErrCompacted", err)
	}
	if _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 4}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Fatalf("compact again: err = %v, want ErrCompacted", err)
	}
	if _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 100}); !errors.Is(err, mvcc.ErrFutureRev) {
		t.Fatalf("compact future: err = %v, want ErrFutureRev", err)
	}
	if r := mustGet(t, s, "a"); r.Kvs[0].ModRevision != 4 || r.Header.Revision != 6 {
		t.Fatalf("a after compaction = %+v", r)
	}
}
