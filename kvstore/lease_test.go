package kvstore

import (
	"errors"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease"
)

func TestLeaseLifecycle(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()
	ctx := testCtx(t)

	// Watch everything from the next revision to see lease deletions.
	ws := s.KV().NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(ctx, 0, []byte("l"), []byte("m"), s.KV().Rev()+1); err != nil {
		t.Fatalf("Watch: %v", err)
	}

	// TTL below the minimum (ceil(1.5 x 100ms) = 1s) is raised to it; the
	// proposer picks a positive id.
	short, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 0})
	if err != nil || short.ID <= 0 || short.TTL != 1 {
		t.Fatalf("LeaseGrant(ttl 0) = %+v, %v; want a positive id with TTL 1", short, err)
	}
	if short.Header == nil || short.Header.MemberId != uint64(s.MemberID()) || short.Header.ClusterId != uint64(s.ClusterID()) || short.Header.RaftTerm == 0 {
		t.Fatalf("lease grant header = %+v", short.Header)
	}
	long, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 77, TTL: 600})
	if err != nil || long.ID != 77 {
		t.Fatalf("LeaseGrant(id 77) = %+v, %v", long, err)
	}
	if _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 77, TTL: 600}); !errors.Is(err, lease.ErrLeaseExists) {
		t.Fatalf("duplicate LeaseGrant: err = %v, want ErrLeaseExists", err)
	}
	if _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: lease.MaxLeaseTTL + 1}); !errors.Is(err, lease.ErrLeaseTTLTooLarge) {
		t.Fatalf("huge TTL: err = %v, want ErrLeaseTTLTooLarge", err)
	}

	for _, kv := range []struct {
		key string
		id  int64
	}{{"l1", short.ID}, {"l2", short.ID}, {"l3", long.ID}} {
		if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte(kv.key), Value: []byte("v"), Lease: kv.id}); err != nil {
			t.Fatalf("Put %s with lease: %v", kv.key, err)
		}
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("l4"), Lease: 12345}); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("Put with unknown lease: err = %v, want ErrLeaseNotFound", err)
	}

	ttl, err := s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: long.ID, Keys: true})
	if err != nil || ttl.GrantedTTL != 600 || ttl.TTL <= 0 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "l3" {
		t.Fatalf("TimeToLive(77) = %+v, %v", ttl, err)
	}
	if renewed, err := s.LeaseRenew(ctx, lease.LeaseID(long.ID)); err != nil || renewed != 600 {
		t.Fatalf("LeaseRenew = %d, %v; want 600", renewed, err)
	}
	if _, err := s.LeaseRenew(ctx, 999); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("LeaseRenew(unknown): err = %v, want ErrLeaseNotFound", err)
	}
	ls, err := s.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	if err != nil || len(ls.Leases) != 2 {
		t.Fatalf("LeaseLeases = %+v, %v; want 2 leases", ls, err)
	}

	// Explicit revoke deletes the attached key.
	if _, err := s.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: long.ID}); err != nil {
		t.Fatalf("LeaseRevoke: %v", err)
	}
	if _, err := s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: long.ID}); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("TimeToLive after revoke: err = %v, want ErrLeaseNotFound", err)
	}

	// The short lease expires by itself; the leader revokes it.
	deleted := map[string]bool{}
	deadline := time.After(waitTimeout)
	for !(deleted["l1"] && deleted["l2"] && deleted["l3"]) {
		select {
		case wr := <-ws.Chan():
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					deleted[string(ev.Kv.Key)] = true
				}
			}
		case <-deadline:
			t.Fatalf("DELETE events seen for %v; want l1, l2 (expiry) and l3 (revoke)", deleted)
		}
	}
	r, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("l"), RangeEnd: []byte("m")})
	if err != nil || r.Count != 0 {
		t.Fatalf("leased keys after expiry = %+v, %v; want none", r, err)
	}
}

func TestLeasesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(t, dir))
	ctx := testCtx(t)
	if _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 5, TTL: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k"), Lease: 5}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s = startServer(t, testConfig(t, dir))
	defer s.Stop()
	ttl, err := s.LeaseTimeToLive(testCtx(t), &pb.LeaseTimeToLiveRequest{ID: 5, Keys: true})
	if err != nil || len(ttl.Keys) != 1 || ttl.GrantedTTL != 600 {
		t.Fatalf("lease after restart = %+v, %v", ttl, err)
	}
}

// TestLeaseCheckpointSurvivesRestart checks the leader persists remaining
// TTLs, so a restart does not give leases their full TTL back.
func TestLeaseCheckpointSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	// Checkpoints record whole seconds; one that would record the full TTL
	// is skipped, so the interval must exceed a second.
	cfg.LeaseCheckpointInterval = 1500 * time.Millisecond
	s := startServer(t, cfg)
	if _, err := s.LeaseGrant(testCtx(t), &pb.LeaseGrantRequest{ID: 9, TTL: 30}); err != nil {
		t.Fatal(err)
	}
	// The grant's waiter fires before the applied index moves; a read
	// barrier settles it. Nothing else is proposed now, so the next applied
	// entry is a checkpoint.
	if err := s.LinearizableReadNotify(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	afterGrant := s.AppliedIndex()
	deadline := time.Now().Add(waitTimeout)
	for s.AppliedIndex() == afterGrant {
		if time.Now().After(deadline) {
			t.Fatal("no lease checkpoint was applied")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	s = startServer(t, cfg)
	defer s.Stop()
	ttl, err := s.LeaseTimeToLive(testCtx(t), &pb.LeaseTimeToLiveRequest{ID: 9})
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 30 || ttl.TTL > 29 {
		t.Fatalf("lease after restart: granted %d remaining %d; want the checkpointed remainder (< 30), not a reset to 30", ttl.GrantedTTL, ttl.TTL)
	}
}
