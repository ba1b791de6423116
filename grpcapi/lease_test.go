package grpcapi

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
)

// End-to-end tests of the Lease service against a real single-member
// kvstore, driven by clientv3 and, for wire details, pb.LeaseClient.

func TestLeaseGrantKeepAliveTTLRevoke(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()

	g, err := e.client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if g.ID <= 0 || g.TTL != 60 {
		t.Fatalf("grant: %+v", g)
	}
	checkRealHeader(t, e, g.ResponseHeader)
	if _, err := e.client.Put(ctx, "leased/a", "1", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Put(ctx, "leased/b", "2", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}

	ttl, err := e.client.TimeToLive(ctx, g.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	// The lessor keeps keys in a map: the order is not defined (as in etcd).
	sort.Slice(ttl.Keys, func(i, j int) bool { return string(ttl.Keys[i]) < string(ttl.Keys[j]) })
	if ttl.ID != g.ID || ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.TTL > 60 || len(ttl.Keys) != 2 ||
		string(ttl.Keys[0]) != "leased/a" || string(ttl.Keys[1]) != "leased/b" {
		t.Fatalf("time to live: %+v keys=%q", ttl, ttl.Keys)
	}
	checkRealHeader(t, e, ttl.ResponseHeader)

	ka, err := e.client.KeepAliveOnce(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ka.ID != g.ID || ka.TTL != 60 {
		t.Fatalf("keepalive: %+v", ka)
	}
	checkRealHeader(t, e, ka.ResponseHeader)

	ls, err := e.client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Leases) != 1 || ls.Leases[0].ID != g.ID {
		t.Fatalf("leases: %+v", ls.Leases)
	}
	checkRealHeader(t, e, ls.ResponseHeader)

	// Revoke deletes the keys, visibly to watchers.
	wch := watchCreated(t, e.client, ctx, "leased/", clientv3.WithPrefix())
	rv, err := e.client.Revoke(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkRealHeader(t, e, rv.Header)
	evs := collectEvents(t, wch, 2)
	for i, want := range []string{"leased/a", "leased/b"} {
		if evs[i].Type != mvccpb.DELETE || string(evs[i].Kv.Key) != want {
			t.Fatalf("event %d = %s, want DELETE %s", i, evString(evs[i]), want)
		}
	}
	if evs[0].Kv.ModRevision != rv.Header.Revision || evs[1].Kv.ModRevision != rv.Header.Revision {
		t.Fatalf("delete events at %d/%d, revoke header revision %d", evs[0].Kv.ModRevision, evs[1].Kv.ModRevision, rv.Header.Revision)
	}
	if gr, err := e.client.Get(ctx, "leased/", clientv3.WithPrefix()); err != nil || len(gr.Kvs) != 0 {
		t.Fatalf("keys after revoke: %v %v", gr, err)
	}

	// A revoked lease: TimeToLive says -1 (not an error), keepalive fails
	// with clientv3's "not found", revoke again is LeaseNotFound.
	ttl, err = e.client.TimeToLive(ctx, g.ID)
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("time to live after revoke: %+v %v", ttl, err)
	}
	if _, err := e.client.KeepAliveOnce(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("keepalive after revoke: %v", err)
	}
	if _, err := e.client.Revoke(ctx, g.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	if ls, err := e.client.Leases(ctx); err != nil || len(ls.Leases) != 0 {
		t.Fatalf("leases after revoke: %+v %v", ls, err)
	}
}

func checkRealHeader(t testing.TB, e *testEnv, h *pb.ResponseHeader) {
	t.Helper()
	if h == nil || h.ClusterId != uint64(e.s.ClusterID()) || h.MemberId != uint64(e.s.MemberID()) ||
		h.RaftTerm == 0 || h.Revision == 0 {
		t.Fatalf("bad header %+v (want cluster %x member %x)", h, e.s.ClusterID(), e.s.MemberID())
	}
}

func TestLeaseGrantWithID(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	lc := pb.NewLeaseClient(e.client.ActiveConnection())
	g, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 1234, TTL: 30})
	if err != nil || g.ID != 1234 || g.TTL != 30 {
		t.Fatalf("grant with id: %+v %v", g, err)
	}
	if _, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 1234, TTL: 30}); !errors.Is(err, rpctypes.ErrGRPCLeaseExist) {
		t.Fatalf("duplicate id: %v, want %v", err, rpctypes.ErrGRPCLeaseExist)
	}
}

func TestLeaseGrantTTLTooLarge(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	_, err := e.client.Grant(e.ctx(), lease.MaxLeaseTTL+1)
	if !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
		t.Fatalf("grant beyond max TTL: %v, want %v", err, rpctypes.ErrLeaseTTLTooLarge)
	}
	// The maximum itself is fine.
	if _, err := e.client.Grant(e.ctx(), lease.MaxLeaseTTL); err != nil {
		t.Fatalf("grant max TTL: %v", err)
	}
}

func TestLeaseRevokeUnknown(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	if _, err := e.client.Revoke(e.ctx(), 424242); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	ttl, err := e.client.TimeToLive(e.ctx(), 424242)
	if err != nil || ttl.TTL != -1 || ttl.ID != 424242 {
		t.Fatalf("time to live of unknown lease: %+v %v", ttl, err)
	}
	checkRealHeader(t, e, ttl.ResponseHeader)
}

// TestLeaseKeepAliveUnknown: etcd answers a keepalive for an unknown lease
// with TTL 0 on the stream, which stays usable.
func TestLeaseKeepAliveUnknown(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	stream, err := pb.NewLeaseClient(e.client.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id      int64
		wantTTL int64
	}{{999999, 0}, {int64(g.ID), 30}, {-5, 0}, {int64(g.ID), 30}} {
		if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: tc.id}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("keepalive %d: %v", tc.id, err)
		}
		if resp.ID != tc.id || resp.TTL != tc.wantTTL {
			t.Fatalf("keepalive %d: %+v, want TTL %d", tc.id, resp, tc.wantTTL)
		}
		checkRealHeader(t, e, resp.Header)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream still open after CloseSend")
	}

	// clientv3 reports it as "lease not found".
	if _, err := e.client.KeepAliveOnce(ctx, 999999); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("KeepAliveOnce unknown: %v", err)
	}
}

// TestLeaseKeepAliveKeepsKeys: a lease kept alive by clientv3 outlives
// several TTLs; once keepalives stop it expires and its key is deleted.
func TestLeaseKeepAliveKeepsKeys(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	// 2s rather than the 1s minimum: clientv3 renews every TTL/3, and a
	// loaded test machine must not stall long enough to lose the lease.
	g, err := e.client.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Put(ctx, "alive", "v", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(ctx)
	kach, err := e.client.KeepAlive(kctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Duration(2*g.TTL)*time.Second + time.Second)
	for time.Now().Before(deadline) {
		select {
		case ka, ok := <-kach:
			if !ok {
				t.Fatal("keepalive channel closed while the lease should be alive")
			}
			if ka.TTL <= 0 {
				t.Fatalf("keepalive response %+v", ka)
			}
		case <-time.After(wllTimeout):
			t.Fatal("no keepalive response")
		}
	}
	if gr, err := e.client.Get(ctx, "alive"); err != nil || len(gr.Kvs) != 1 {
		t.Fatalf("key lost while kept alive: %v %v", gr, err)
	}
	wch := watchCreated(t, e.client, ctx, "alive")
	stop()
	// Expiry: the DELETE arrives on its own.
	ev := collectEvents(t, wch, 1)[0]
	if ev.Type != mvccpb.DELETE {
		t.Fatalf("want DELETE on expiry, got %s", evString(ev))
	}
}

// TestLeaseExpiryDeletesKeys: a lease with the minimum TTL and no
// keepalives expires; its keys go away with DELETE events.
func TestLeaseExpiryDeletesKeys(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	wch := watchCreated(t, e.client, ctx, "exp/", clientv3.WithPrefix())
	var (
		g     *clientv3.LeaseGrantResponse
		start time.Time
	)
	// Ask for 1s, which the server raises to its minimum TTL. The keys are
	// attached in one round trip right after the grant; should a stalled
	// machine let the lease expire even before that, try a longer one.
	for ttl := int64(1); ; ttl *= 2 {
		start = time.Now()
		var err error
		if g, err = e.client.Grant(ctx, ttl); err != nil {
			t.Fatal(err)
		}
		_, err = e.client.Txn(ctx).Then(
			clientv3.OpPut("exp/1", "v", clientv3.WithLease(g.ID)),
			clientv3.OpPut("exp/2", "v", clientv3.WithLease(g.ID)),
			clientv3.OpPut("exp/3", "v", clientv3.WithLease(g.ID)),
		).Commit()
		if err == nil {
			break
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) || ttl >= 8 {
			t.Fatal(err)
		}
	}
	evs := collectEvents(t, wch, 6)
	for i, ev := range evs {
		if want := map[bool]mvccpb.Event_EventType{true: mvccpb.PUT, false: mvccpb.DELETE}[i < 3]; ev.Type != want {
			t.Fatalf("event %d = %s, want %s", i, evString(ev), want)
		}
	}
	if el := time.Since(start); el < time.Duration(g.TTL)*time.Second {
		t.Fatalf("lease expired after %v, TTL is %ds", el, g.TTL)
	}
	if gr, err := e.client.Get(ctx, "exp/", clientv3.WithPrefix()); err != nil || len(gr.Kvs) != 0 {
		t.Fatalf("keys after expiry: %v %v", gr, err)
	}
	ttl, err := e.client.TimeToLive(ctx, g.ID)
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("time to live after expiry: %+v %v", ttl, err)
	}
}

// BenchmarkLeaseKeepAlive: keepalive round trips on one stream.
func BenchmarkLeaseKeepAlive(b *testing.B) {
	e := newTestEnv(b, envOptions{})
	ctx := e.ctx()
	g, err := e.client.Grant(ctx, 60)
	if err != nil {
		b.Fatal(err)
	}
	stream, err := pb.NewLeaseClient(e.client.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		b.Fatal(err)
	}
	req := &pb.LeaseKeepAliveRequest{ID: int64(g.ID)}
	for b.Loop() {
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
		if r, err := stream.Recv(); err != nil || r.TTL != 60 {
			b.Fatalf("keepalive: %v %v", r, err)
		}
	}
}

// BenchmarkLeaseKeepAliveParallel: many streams (one per goroutine) renewing
// their own leases at once.
func BenchmarkLeaseKeepAliveParallel(b *testing.B) {
	e := newTestEnv(b, envOptions{})
	ctx := e.ctx()
	lc := pb.NewLeaseClient(e.client.ActiveConnection())
	b.SetParallelism(8)
	b.RunParallel(func(pb_ *testing.PB) {
		g, err := e.client.Grant(ctx, 60)
		if err != nil {
			b.Error(err)
			return
		}
		stream, err := lc.LeaseKeepAlive(ctx)
		if err != nil {
			b.Error(err)
			return
		}
		req := &pb.LeaseKeepAliveRequest{ID: int64(g.ID)}
		for pb_.Next() {
			if err := stream.Send(req); err != nil {
				b.Error(err)
				return
			}
			if _, err := stream.Recv(); err != nil {
				b.Error(err)
				return
			}
		}
		_ = stream.CloseSend()
	})
}
