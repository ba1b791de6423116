package kvstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"

	"github.com/meshetcd/meshetcd/internal/raftnet"
)

type testCluster struct {
	t       *testing.T
	net     *raftnet.Network
	cfgs    []Config
	members []*Server
}

func newTestCluster(t *testing.T, size int, mutate func(*Config)) *testCluster {
	c := &testCluster{t: t, net: raftnet.New()}
	t.Cleanup(c.net.Close)
	initial := ""
	for i := 0; i < size; i++ {
		if i > 0 {
			initial += ","
		}
		initial += fmt.Sprintf("m%d=http://127.0.0.1:%d", i, 23100+i)
	}
	base := t.TempDir()
	for i := 0; i < size; i++ {
		cfg := testConfig(t, filepath.Join(base, fmt.Sprintf("m%d", i)))
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.InitialCluster = mustURLsMap(t, initial)
		cfg.PeerURLs = cfg.InitialCluster[cfg.Name]
		cfg.ClientURLs = mustURLsMap(t, fmt.Sprintf("x=http://127.0.0.1:%d", 23200+i))["x"]
		if mutate != nil {
			mutate(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	c.members = make([]*Server, size)
	for i := range c.cfgs {
		c.start(i)
	}
	for i := range c.members {
		c.waitReady(i)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			if m != nil {
				m.Stop()
			}
		}
	})
	return c
}

func (c *testCluster) start(i int) {
	cfg := c.cfgs[i]
	cfg.Transport = c.net.Transport()
	s, err := New(context.Background(), cfg)
	if err != nil {
		c.t.Fatalf("start member %d: %v", i, err)
	}
	c.net.Register(s.r)
	c.members[i] = s
}

func (c *testCluster) stop(i int) {
	c.net.Unregister(c.members[i].r.ID())
	c.members[i].Stop()
	c.members[i] = nil
}

func (c *testCluster) waitReady(i int) {
	select {
	case <-c.members[i].ReadyNotify():
	case <-time.After(waitTimeout):
		c.t.Fatalf("member %d not ready", i)
	}
}

// leader waits for the running members to agree on a leader.
func (c *testCluster) leader() int {
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		for i, m := range c.members {
			if m != nil && m.Leader() == m.MemberID() {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no leader elected")
	return -1
}

func (c *testCluster) follower() int {
	lead := c.leader()
	for i, m := range c.members {
		if m != nil && i != lead {
			return i
		}
	}
	c.t.Fatal("no follower")
	return -1
}

func TestClusterReplicatesThroughFollowers(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	f := c.members[c.follower()]
	ctx := testCtx(t)

	// A follower's proposal is forwarded to the leader by raft.
	put, err := f.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatalf("Put on follower: %v", err)
	}
	for i, m := range c.members {
		r, err := m.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
		if err != nil || len(r.Kvs) != 1 || r.Header.Revision != put.Header.Revision {
			t.Fatalf("linearizable read on member %d = %v, %v; want k at rev %d", i, r, err, put.Header.Revision)
		}
	}
	ms := f.Members()
	if len(ms) != 3 {
		t.Fatalf("members = %v", ms)
	}
	for _, m := range ms {
		if m.Name == "" || len(m.ClientURLs) != 1 {
			t.Fatalf("member %s not published: %+v", m.ID, m)
		}
	}
	if f.ClusterID() != c.members[c.leader()].ClusterID() {
		t.Fatal("members disagree on the cluster id")
	}
	// Keepalives need the leader's lessor; forwarding comes with the mesh.
	l, err := f.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
	if err != nil {
		t.Fatalf("LeaseGrant on follower: %v", err)
	}
	if _, err := f.LeaseRenew(ctx, lease.LeaseID(l.ID)); !errors.Is(err, lease.ErrNotPrimary) {
		t.Fatalf("LeaseRenew on follower: err = %v, want ErrNotPrimary", err)
	}
	if ttl, err := c.members[c.leader()].LeaseRenew(ctx, lease.LeaseID(l.ID)); err != nil || ttl != 60 {
		t.Fatalf("LeaseRenew on leader = %d, %v", ttl, err)
	}
}

func TestClusterLeaderFailoverAndMoveLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	old := c.leader()
	mustPut(t, c.members[old], "before", "1")
	c.stop(old)
	lead := c.leader()
	if lead == old {
		t.Fatal("stopped member still leads")
	}
	mustPut(t, c.members[lead], "after", "2")
	c.start(old)
	c.waitReady(old)
	deadline := time.Now().Add(waitTimeout)
	for len(mustGet(t, c.members[old], "after").Kvs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("restarted member never caught up")
		}
		time.Sleep(10 * time.Millisecond)
	}

	lead = c.leader()
	target := (lead + 1) % 3
	ls := c.members[lead]
	if err := ls.MoveLeader(ctx, uint64(ls.MemberID()), uint64(c.members[target].MemberID())); err != nil {
		t.Fatalf("MoveLeader: %v", err)
	}
	if got := c.leader(); got != target {
		t.Fatalf("leader after MoveLeader = m%d, want m%d", got, target)
	}
	mustPut(t, c.members[target], "moved", "3")
}

// TestClusterSnapshotCatchUp compacts the log while a member is down, so it
// can only catch up from a database snapshot sent by the leader.
func TestClusterSnapshotCatchUp(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotCount = 10
		cfg.SnapshotCatchUpEntries = 5
	})
	lagging := c.follower()
	c.stop(lagging)
	lead := c.members[c.leader()]
	for i := 0; i < 60; i++ {
		mustPut(t, lead, fmt.Sprintf("k%02d", i), "v")
	}
	c.start(lagging)
	c.waitReady(lagging)
	m := c.members[lagging]
	r, err := m.Range(testCtx(t), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || r.Count != 60 {
		t.Fatalf("caught-up member has %v, %v; want 60 keys", r, err)
	}
	mustPut(t, m, "after-snapshot", "ok")
	m.Stop()
	c.members[lagging] = nil
	c.net.Unregister(m.r.ID())
	// And it restarts from the installed snapshot database.
	c.start(lagging)
	c.waitReady(lagging)
	if r := mustGet(t, c.members[lagging], "k59"); len(r.Kvs) != 1 {
		t.Fatal("snapshot data lost across restart")
	}
}

func TestClusterMembershipChanges(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	lead := c.members[c.leader()]

	// A learner that never starts: listed, not promotable.
	learnerURLs := mustURLsMap(t, "x=http://127.0.0.1:23150")["x"]
	learner := membership.NewMemberAsLearner("m3", learnerURLs, "etcd-cluster", nil)
	ms, err := lead.AddMember(ctx, *learner)
	if err != nil || len(ms) != 4 {
		t.Fatalf("AddMember(learner) = %v, %v; want 4 members", ms, err)
	}
	if m := lead.cluster.Member(learner.ID); m == nil || !m.IsLearner {
		t.Fatalf("added learner = %+v", m)
	}
	if _, err := lead.PromoteMember(ctx, uint64(learner.ID)); !errors.Is(err, servererrors.ErrLearnerNotReady) {
		t.Fatalf("promoting a learner that never ran: err = %v, want ErrLearnerNotReady", err)
	}
	if ms, err := lead.RemoveMember(ctx, uint64(learner.ID)); err != nil || len(ms) != 3 {
		t.Fatalf("RemoveMember(learner) = %v, %v", ms, err)
	}

	// New peer URLs for a follower.
	fi := c.follower()
	f := c.members[fi]
	upd := *lead.cluster.Member(f.MemberID())
	upd.PeerURLs = []string{"http://127.0.0.1:23160"}
	if _, err := lead.UpdateMember(ctx, upd); err != nil {
		t.Fatalf("UpdateMember: %v", err)
	}
	if got := f.cluster.Member(f.MemberID()); got == nil || got.PeerURLs[0] != "http://127.0.0.1:23160" {
		deadline := time.Now().Add(waitTimeout)
		for got == nil || got.PeerURLs[0] != "http://127.0.0.1:23160" {
			if time.Now().After(deadline) {
				t.Fatalf("follower's view of its peer URLs = %+v", got)
			}
			time.Sleep(10 * time.Millisecond)
			got = f.cluster.Member(f.MemberID())
		}
	}

	// Removing a follower stops it; the rest keep working.
	if ms, err := lead.RemoveMember(ctx, uint64(f.MemberID())); err != nil || len(ms) != 2 {
		t.Fatalf("RemoveMember(follower) = %v, %v", ms, err)
	}
	select {
	case <-f.StopNotify():
	case <-time.After(waitTimeout):
		t.Fatal("removed member kept running")
	}
	c.net.Unregister(f.r.ID())
	c.members[fi] = nil
	mustPut(t, c.members[c.leader()], "after-removal", "ok")
	if _, err := lead.MemberList(ctx, &pb.MemberListRequest{Linearizable: true}); err != nil {
		t.Fatalf("MemberList: %v", err)
	}
}

// A follower's forwarded proposal lost without any sign (no unreachable
// report, no leader or route change: a relaying mesh member dropped it) is
// proposed again on the retry timer, not after the request timeout.
func TestClusterLostForwardedProposalIsRetried(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	f := c.members[c.follower()]
	ctx := testCtx(t)
	if _, err := f.Put(ctx, &pb.PutRequest{Key: []byte("warm"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put on follower: %v", err)
	}
	// The proposal and its first retry are lost.
	c.net.DropProposals(2)
	start := time.Now()
	_, err := f.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Put on follower with its proposal lost: %v (after %v)", err, took)
	}
	if n := c.net.ProposalDropsLeft(); n != 0 {
		t.Fatalf("%d proposal drops left: the test lost nothing", n)
	}
	// The retries come after 5 heartbeats and then an election timeout
	// (150 ms here); the bound leaves room for -race on a busy machine and
	// stays far below the request timeout (5.2 s) the Put took before.
	if want := 2 * time.Second; took > want {
		t.Errorf("Put with two lost proposals took %v, want < %v", took, want)
	}
	r, err := f.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
	if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Version != 1 {
		t.Fatalf("Range k = %v, %v; want one version", r, err)
	}
	t.Logf("Put with two lost proposals took %v", took.Round(time.Millisecond))
}

// A lost forwarded copy is proposed again when its timeout is due, not at
// the next tick of the retry timer's own backoff: the copy is stamped after
// the timer is re-armed, so a timer period equal to the timeout ends a hair
// short of it and the copy waited a whole period more.
func TestClusterLostCopyIsRetriedWhenItsTimeoutIsDue(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.ElectionTimeout = time.Second
	})
	f := c.members[c.follower()]
	ctx := testCtx(t)
	if _, err := f.Put(ctx, &pb.PutRequest{Key: []byte("warm"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put on follower: %v", err)
	}
	// A commit-latency estimate at the election timeout (a leader move
	// inflates it): every copy waits 1 s.
	f.retry.mu.Lock()
	f.retry.srtt, f.retry.rttvar = time.Second, 0
	f.retry.mu.Unlock()
	c.net.DropProposals(2)
	start := time.Now()
	if _, err := f.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put on follower with two copies lost: %v", err)
	}
	took := time.Since(start)
	if n := c.net.ProposalDropsLeft(); n != 0 {
		t.Fatalf("%d proposal drops left: the test lost nothing", n)
	}
	t.Logf("Put with two lost copies took %v", took.Round(time.Millisecond))
	// Copies at 0, 1 s and 2 s; 3.5 s (0, 1.5, 3.5) when a check falls
	// short of the timeout.
	if want := 2500 * time.Millisecond; took > want {
		t.Errorf("Put with two lost copies took %v, want < %v (a copy waited past its timeout)", took, want)
	}
}
