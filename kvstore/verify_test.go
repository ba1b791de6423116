package kvstore

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestUnderEtcdVerify runs writes, leases, compaction, snapshots and a
// restart with etcd's runtime verification on: backend writes must come
// from applyEntries and the consistent index must never go backwards.
func TestUnderEtcdVerify(t *testing.T) {
	t.Setenv("ETCD_VERIFY", "all")
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 4
	s := startServer(t, cfg)
	ctx := testCtx(t)
	l, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v"), Lease: l.ID}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 5, Physical: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: l.ID}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s = startServer(t, cfg)
	defer s.Stop()
	if r, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}); err != nil || r.Count != 0 {
		t.Fatalf("keys after revoke and restart = %v, %v; want none", r, err)
	}
	mustPut(t, s, "after", "restart")
}
