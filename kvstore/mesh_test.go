package kvstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
	"github.com/meshetcd/meshetcd/mesh/meshtest"
	"github.com/meshetcd/meshetcd/meshconn"
	"github.com/meshetcd/meshetcd/peer"
)

var meshTestPSK = bytes.Repeat([]byte{5}, 32)

const meshTestLabel = "kvstore-mesh-test"

// meshCluster runs members each with its own mesh router on one memnet
// network. Member i lives on memnet host "h<i>", listens on "h<i>:2380" and
// has the peer URL http://127.0.0.1:<28100+i> (its mesh peer name).
type meshCluster struct {
	t *testing.T
	// routerTweak adjusts every router's config (set before starting).
	routerTweak func(*mesh.Config)
	nw          *memnet.Network
	base        string
	cfgs        []Config
	routers     []*mesh.Router
	members     []*Server
}

func hostName(i int) string { return fmt.Sprintf("h%d", i) }
func hostAddr(i int) string { return hostName(i) + ":2380" }
func peerURL(i int) string  { return fmt.Sprintf("http://127.0.0.1:%d", 28100+i) }

// meshMemberConfig is a member's config tuned for a loaded 2-core machine
// under -race: etcd's default timing (100 ms heartbeat, 1 s election).
func meshMemberConfig(t *testing.T, dir string, i int) Config {
	cfg := testConfig(t, dir)
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)).Named(fmt.Sprintf("m%d", i))
	cfg.Name = fmt.Sprintf("m%d", i)
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ElectionTimeout = time.Second
	cfg.PeerURLs = mustURLsMap(t, "x="+peerURL(i))["x"]
	cfg.ClientURLs = mustURLsMap(t, fmt.Sprintf("x=http://127.0.0.1:%d", 28200+i))["x"]
	cfg.healthInterval = 200 * time.Millisecond
	return cfg
}

func newMeshCluster(t *testing.T, size int, mutate func(*Config)) *meshCluster {
	return newMeshClusterWith(t, size, mutate, nil)
}

func newMeshClusterWith(t *testing.T, size int, mutate func(*Config), routerTweak func(*mesh.Config)) *meshCluster {
	t.Helper()
	c := &meshCluster{t: t, nw: memnet.New(), base: t.TempDir(), routerTweak: routerTweak}
	initial := ""
	for i := 0; i < size; i++ {
		if i > 0 {
			initial += ","
		}
		initial += fmt.Sprintf("m%d=%s", i, peerURL(i))
	}
	for i := 0; i < size; i++ {
		cfg := meshMemberConfig(t, filepath.Join(c.base, fmt.Sprintf("m%d", i)), i)
		cfg.InitialCluster = mustURLsMap(t, initial)
		if mutate != nil {
			mutate(&cfg)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	c.routers = make([]*mesh.Router, size)
	c.members = make([]*Server, size)
	// Members start concurrently, as separate processes would.
	var wg sync.WaitGroup
	errs := make([]error, size)
	for i := range c.cfgs {
		c.routers[i] = c.startRouter(i, nil)
	}
	for i := range c.cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.startMember(i, context.Background())
		}()
	}
	wg.Wait()
	t.Cleanup(c.stopAll)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start member %d: %v", i, err)
		}
	}
	for i := range c.members {
		c.waitReady(i)
	}
	return c
}

func (c *meshCluster) stopAll() {
	for i := range c.members {
		if c.members[i] != nil {
			c.members[i].HardStop()
		}
		if c.routers[i] != nil {
			c.routers[i].Stop()
		}
	}
}

// meshRouterConfig is a router config for member i; seeds default to every
// other member's address.
func (c *meshCluster) meshRouterConfig(i int, seeds []string) mesh.Config {
	name, err := peer.NameFromURLs([]string{peerURL(i)})
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := meshtest.Config(c.t, name)
	cfg.NickName = fmt.Sprintf("m%d", i)
	cfg.ClusterLabel = meshTestLabel
	cfg.PSK = meshTestPSK
	cfg.Transport = c.nw.Host(hostName(i))
	cfg.ListenAddr = hostAddr(i)
	cfg.MaxDatagramSize = peer.MaxDatagramSize(Config{}.EffectiveMaxSizePerMsg())
	if seeds == nil {
		for j := 0; j < len(c.cfgs); j++ {
			if j != i {
				seeds = append(seeds, hostAddr(j))
			}
		}
	}
	cfg.Seeds = seeds
	if c.routerTweak != nil {
		c.routerTweak(&cfg)
	}
	return cfg
}

func (c *meshCluster) startRouter(i int, seeds []string) *mesh.Router {
	c.t.Helper()
	r, err := mesh.New(c.meshRouterConfig(i, seeds))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	return r
}

// meshPeers is Config.Peers for a member on router r.
func meshPeers(r *mesh.Router, cfg Config) func(PeerHost) (Peers, error) {
	return func(h PeerHost) (Peers, error) {
		return peer.New(peer.Config{Logger: cfg.Logger, Router: r, Host: h, PeerURLs: cfg.PeerURLs.StringSlice()})
	}
}

// meshStats are s's raft traffic counters over the mesh.
func meshStats(s *Server) peer.RaftStats { return s.peers.(*peer.Transport).Stats() }

func (c *meshCluster) startMember(i int, ctx context.Context) error {
	cfg := c.cfgs[i]
	cfg.Peers = meshPeers(c.routers[i], cfg)
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	c.members[i] = s
	return nil
}

// restart starts member i again (a new router too: a router's channels
// serve one member).
func (c *meshCluster) restart(i int) {
	c.t.Helper()
	c.routers[i] = c.startRouter(i, nil)
	if err := c.startMember(i, context.Background()); err != nil {
		c.t.Fatalf("restart member %d: %v", i, err)
	}
	c.waitReady(i)
}

// kill stops member i without leadership transfer, and its router.
func (c *meshCluster) kill(i int) {
	c.members[i].HardStop()
	c.routers[i].Stop()
	c.members[i], c.routers[i] = nil, nil
}

func (c *meshCluster) waitReady(i int) {
	c.t.Helper()
	select {
	case <-c.members[i].ReadyNotify():
	case <-time.After(waitTimeout):
		c.t.Fatalf("member %d not ready", i)
	}
}

// leader waits until every running member agrees on one leader.
func (c *meshCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		lead, agree := types.ID(0), true
		for _, m := range c.members {
			if m == nil {
				continue
			}
			if l := m.Leader(); l == 0 || (lead != 0 && l != lead) {
				agree = false
			} else {
				lead = l
			}
		}
		if agree && lead != 0 {
			for i, m := range c.members {
				if m != nil && m.MemberID() == lead {
					return i
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("members never agreed on a running leader")
	return -1
}

func (c *meshCluster) others(not ...int) []int {
	var out []int
	for i, m := range c.members {
		if m != nil && !containsInt(not, i) {
			out = append(out, i)
		}
	}
	return out
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func TestMeshClusterReplicatesAndForwards(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	ctx := testCtx(t)
	lead := c.leader()
	f := c.members[c.others(lead)[0]]

	put, err := f.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatalf("Put on follower: %v", err)
	}
	for i, m := range c.members {
		r, err := m.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
		if err != nil || len(r.Kvs) != 1 || r.Header.Revision < put.Header.Revision {
			t.Fatalf("linearizable read on member %d = %v, %v; want k at rev >= %d", i, r, err, put.Header.Revision)
		}
	}

	// A large value close to MaxRequestBytes crosses the mesh in one datagram.
	big := bytes.Repeat([]byte("x"), int(DefaultMaxRequestBytes)-1024)
	if _, err := f.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: big}); err != nil {
		t.Fatalf("Put of %d bytes on follower: %v", len(big), err)
	}

	// Keepalive and time-to-live through a follower reach the leader's lessor.
	l, err := f.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
	if err != nil {
		t.Fatalf("LeaseGrant: %v", err)
	}
	if ttl, err := f.LeaseRenew(ctx, lease.LeaseID(l.ID)); err != nil || ttl != 60 {
		t.Fatalf("LeaseRenew through follower = %d, %v; want 60", ttl, err)
	}
	if _, err := f.LeaseRenew(ctx, lease.LeaseID(12345)); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("LeaseRenew of an unknown lease through follower: err = %v, want ErrLeaseNotFound", err)
	}
	ttl, err := f.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: l.ID, Keys: true})
	if err != nil || ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.Header.MemberId != uint64(f.MemberID()) {
		t.Fatalf("LeaseTimeToLive through follower = %+v, %v", ttl, err)
	}
	if _, err := f.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: 12345}); !errors.Is(err, lease.ErrLeaseNotFound) {
		t.Fatalf("LeaseTimeToLive of an unknown lease: err = %v, want ErrLeaseNotFound", err)
	}

	// MoveLeader is the leader's business, as in etcd.
	if err := f.MoveLeader(ctx, uint64(c.members[lead].MemberID()), uint64(f.MemberID())); err == nil {
		t.Fatal("MoveLeader on a follower succeeded")
	}
	st := meshStats(f)
	if st.Sent == 0 || st.Received == 0 {
		t.Fatalf("mesh transport stats %+v: nothing went over the mesh", st)
	}
	t.Logf("follower transport stats: %+v", st)
}

// writer puts keys in a loop on one member and records every acknowledged
// write and the longest time a single write took (a stall).
type writer struct {
	name     string
	mu       sync.Mutex
	acked    []string
	maxStall time.Duration
	errs     int
	lastErr  error
}

func (w *writer) run(ctx context.Context, s func() *Server) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s-%05d", w.name, i)
		start := time.Now()
		var err error
		// A failed write is retried under the same key until it succeeds:
		// the stall is the whole time the key took to be acknowledged.
		for ctx.Err() == nil {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = s().Put(rctx, &pb.PutRequest{Key: []byte(key), Value: []byte("v")})
			cancel()
			if err == nil {
				break
			}
			w.mu.Lock()
			w.errs++
			w.lastErr = err
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		// A write still pending when the test ends has stalled that long
		// too (its proposal may have been lost with a dead link).
		d := time.Since(start)
		w.mu.Lock()
		if err == nil {
			w.acked = append(w.acked, key)
		}
		if d > w.maxStall {
			w.maxStall = d
		}
		w.mu.Unlock()
	}
}

func (w *writer) result() (acked []string, maxStall time.Duration, errs int, lastErr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.acked...), w.maxStall, w.errs, w.lastErr
}

// checkAcked verifies that every acknowledged key is on member s.
func checkAcked(t *testing.T, s *Server, keys []string) {
	t.Helper()
	r, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, KeysOnly: true})
	if err != nil {
		t.Fatalf("Range on member %s: %v", s.MemberID(), err)
	}
	have := make(map[string]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		have[string(kv.Key)] = true
	}
	for _, k := range keys {
		if !have[k] {
			t.Fatalf("acknowledged write %q missing on member %s", k, s.MemberID())
		}
	}
}

// leaderWatch counts distinct leaders seen by polling every member.
type leaderWatch struct {
	mu      sync.Mutex
	last    types.ID
	changes int
}

func (lw *leaderWatch) run(ctx context.Context, members func() []*Server) {
	for ctx.Err() == nil {
		for _, m := range members() {
			if m == nil {
				continue
			}
			if l := m.Leader(); l != 0 {
				lw.mu.Lock()
				if lw.last != 0 && l != lw.last {
					lw.changes++
				}
				lw.last = l
				lw.mu.Unlock()
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMeshLeaderKillAndGracefulStop(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	old := c.leader()
	f := c.others(old)

	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{name: "w"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, func() *Server { return c.members[f[0]] })
	}()
	time.Sleep(500 * time.Millisecond)
	// Kill the leader: no transfer, the others must elect a new one.
	killed := time.Now()
	c.kill(old)
	lead := c.leader()
	t.Logf("new leader m%d elected %v after the leader was killed", lead, time.Since(killed))
	time.Sleep(500 * time.Millisecond)
	cancel()
	<-done
	acked, stall, errs, lastErr := w.result()
	t.Logf("%d writes acknowledged, longest %v, %d failed attempts (last: %v)", len(acked), stall, errs, lastErr)
	if len(acked) == 0 {
		t.Fatal("no write acknowledged")
	}
	for _, i := range c.others() {
		checkAcked(t, c.members[i], acked)
	}

	// Restart it; then a graceful Stop of the leader hands leadership over:
	// a new leader exists sooner than any election could produce one.
	c.restart(old)
	checkAcked(t, c.members[old], acked)
	lead = c.leader()
	stopped := time.Now()
	c.members[lead].Stop()
	took := time.Since(stopped)
	c.routers[lead].Stop()
	c.members[lead], c.routers[lead] = nil, nil
	newLead := -1
	for _, i := range c.others() {
		if l := c.members[i].Leader(); l != 0 {
			for j, m := range c.members {
				if m != nil && m.MemberID() == l {
					newLead = j
				}
			}
		}
	}
	t.Logf("graceful Stop of leader took %v; leader right after: m%d", took, newLead)
	if newLead < 0 {
		t.Fatal("no running member leads right after a graceful Stop of the leader: leadership was not transferred")
	}
	mustPut(t, c.members[newLead], "after-transfer", "ok")
}

// TestMeshPartialConnectivity breaks the link between the leader A and a
// follower C while B reaches both: the mesh routes A–C through B, so
// writes on A and C keep flowing and leadership does not move. "cut"
// resets the connections (detected at once); "blackhole" silently stops
// delivery, which the mesh detects by its dead timeout (defaults: 150 ms
// heartbeat, 600 ms dead timeout).
func TestMeshPartialConnectivity(t *testing.T) {
	for _, fault := range []string{"cut", "blackhole"} {
		t.Run(fault, func(t *testing.T) { testPartialConnectivity(t, fault) })
	}
}

func testPartialConnectivity(t *testing.T, fault string) {
	var tweak func(*mesh.Config)
	if fault == "blackhole" {
		def := mesh.DefaultConfig()
		tweak = func(cfg *mesh.Config) {
			cfg.HeartbeatInterval, cfg.DeadTimeout = def.HeartbeatInterval, def.DeadTimeout
		}
	}
	c := newMeshClusterWith(t, 3, nil, tweak)
	a := c.leader()
	o := c.others(a)
	b, cc := o[0], o[1]

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ws := []*writer{{name: "onA"}, {name: "onC"}}
	for k, idx := range []int{a, cc} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[k].run(ctx, func() *Server { return c.members[idx] })
		}()
	}
	lw := &leaderWatch{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		lw.run(ctx, func() []*Server { return c.members })
	}()
	time.Sleep(time.Second)
	if fault == "cut" {
		c.nw.Cut(hostName(a), hostName(cc))
	} else {
		c.nw.Blackhole(hostName(a), hostName(cc))
	}
	cut := time.Now()
	testutil.Eventually(t, 10*time.Second, "A routes to C through B", func() bool {
		for _, r := range c.routers[a].Status().Routes {
			if r.Dest == c.routers[cc].Name() {
				return r.NextHop == c.routers[b].Name()
			}
		}
		return false
	})
	t.Logf("A–C rerouted through B after %v", time.Since(cut))
	time.Sleep(4 * time.Second)
	cancel()
	wg.Wait()

	lw.mu.Lock()
	changes := lw.changes
	lw.mu.Unlock()
	var all []string
	for _, w := range ws {
		acked, stall, errs, lastErr := w.result()
		t.Logf("writer %s: %d writes acknowledged, longest write %v, %d failed attempts (last: %v)", w.name, len(acked), stall, errs, lastErr)
		if len(acked) < 10 {
			t.Errorf("writer %s: only %d writes in 5 s", w.name, len(acked))
		}
		// The product's promise: no write stalls for more than ~2 s. A
		// follower's proposal lost with a silently dead link is proposed
		// again when the route changes (propose.go, dedupe.go).
		const bound = 2500 * time.Millisecond
		if stall > bound {
			t.Errorf("writer %s stalled %v (> %v)", w.name, stall, bound)
		}
		all = append(all, acked...)
	}
	t.Logf("leader changes during the cut: %d (B is m%d)", changes, b)
	if changes > 1 {
		t.Errorf("leadership changed %d times; at most once allowed", changes)
	}
	for _, i := range c.others() {
		checkAcked(t, c.members[i], all)
	}
}

// TestMeshSnapshotThroughRelay compacts the log while a follower is down,
// then brings it back with its direct link to the leader cut: the
// database snapshot has to stream through the relay.
func TestMeshSnapshotThroughRelay(t *testing.T) {
	c := newMeshCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotCount = 10
		cfg.SnapshotCatchUpEntries = 5
	})
	a := c.leader()
	lag := c.others(a)[1]
	c.kill(lag)
	for i := 0; i < 60; i++ {
		mustPut(t, c.members[a], fmt.Sprintf("k%02d", i), "v")
	}
	c.nw.Cut(hostName(a), hostName(lag))
	c.restart(lag)
	m := c.members[lag]
	r, err := m.Range(testCtx(t), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || r.Count != 60 {
		t.Fatalf("caught-up member has %v, %v; want 60 keys", r, err)
	}
	if got := meshStats(m).SnapshotsReceived; got == 0 {
		t.Fatal("the lagging member caught up without a snapshot; the test did not test snapshots")
	}
	if meshStats(c.members[a]).SnapshotsSent == 0 && c.members[a].Leader() == c.members[a].MemberID() {
		t.Fatal("leader reports no snapshot sent")
	}
	mustPut(t, m, "after-snapshot", "ok")
}

// addMeshMember prepares member i (beyond the initial cluster) whose
// router is seeded with one existing member's address only.
func (c *meshCluster) addMeshMember(i int, seed int, mutate func(*Config)) {
	c.t.Helper()
	for len(c.cfgs) <= i {
		c.cfgs = append(c.cfgs, Config{})
		c.routers = append(c.routers, nil)
		c.members = append(c.members, nil)
	}
	cfg := meshMemberConfig(c.t, filepath.Join(c.base, fmt.Sprintf("m%d", i)), i)
	if mutate != nil {
		mutate(&cfg)
	}
	c.cfgs[i] = cfg
	c.routers[i] = c.startRouter(i, []string{hostAddr(seed)})
}

func TestMeshJoinAsLearnerAndPromote(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	lead := c.members[c.leader()]
	for i := 0; i < 20; i++ {
		mustPut(t, lead, fmt.Sprintf("before-%02d", i), "v")
	}
	// The fourth member knows only m1's address.
	c.addMeshMember(3, 1, func(cfg *Config) { cfg.Join = true })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.startMember(3, ctx); err != nil {
		t.Fatalf("join: %v", err)
	}
	j := c.members[3]
	if m := lead.cluster.Member(j.MemberID()); m == nil || !m.IsLearner {
		t.Fatalf("joined member is %+v on the leader; want a learner", m)
	}
	c.waitReady(3)
	testutil.Eventually(t, waitTimeout, "the joined member is promoted to a voter", func() bool {
		m := lead.cluster.Member(j.MemberID())
		return m != nil && !m.IsLearner && !j.IsLearner()
	})
	if n := len(lead.cluster.VotingMembers()); n != 4 {
		t.Fatalf("voting members = %d, want 4", n)
	}
	r := mustGet(t, j, "before-19")
	if len(r.Kvs) != 1 {
		t.Fatal("joined member lacks data written before it joined")
	}
	mustPut(t, j, "from-joined", "ok")
	for _, m := range j.Members() {
		if m.Name == "" {
			t.Fatalf("member %s has no name after publish: %+v", m.ID, m)
		}
	}
	// A second join with the same peer URLs (a lost answer, retried) gets
	// the same id rather than a second member, but a started member's URLs
	// cannot be taken over.
	if _, err := lead.handleJoin(ctx, string(c.routers[3].Name()), []byte(`{"name":"m3","peerURLs":["`+peerURL(3)+`"]}`)); !errors.Is(err, membership.ErrPeerURLexists) {
		t.Fatalf("join with the URLs of a started member: err = %v, want ErrPeerURLexists", err)
	}
}

func TestMeshExistingAfterMemberAdd(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	ctx := testCtx(t)
	lead := c.members[c.leader()]
	mustPut(t, lead, "before", "v")

	// `etcdctl member add m3 --peer-urls=...`, then start m3 with
	// --initial-cluster-state existing.
	urls := mustURLsMap(t, "x="+peerURL(3))["x"]
	now := time.Now()
	added := membership.NewMember("", urls, "", &now)
	if _, err := lead.AddMember(ctx, *added); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	c.addMeshMember(3, 0, func(cfg *Config) { cfg.InitialClusterState = "existing" })
	sctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.startMember(3, sctx); err != nil {
		t.Fatalf("start with existing: %v", err)
	}
	c.waitReady(3)
	n := c.members[3]
	if n.MemberID() != added.ID || n.ClusterID() != lead.ClusterID() {
		t.Fatalf("new member is %s in cluster %s; want %s in %s", n.MemberID(), n.ClusterID(), added.ID, lead.ClusterID())
	}
	if r := mustGet(t, n, "before"); len(r.Kvs) != 1 {
		t.Fatal("new member lacks earlier data")
	}
	mustPut(t, n, "from-new", "ok")

	// A member whose peer URLs were never added cannot start as existing.
	c.addMeshMember(4, 0, func(cfg *Config) { cfg.InitialClusterState = "existing" })
	fctx, fcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer fcancel()
	if err := c.startMember(4, fctx); err == nil {
		t.Fatal("a member not in the membership started as existing")
	} else {
		t.Logf("unknown member refused as expected: %v", err)
	}
}

// TestMeshForeignPeersCannotDisturb starts routers with a wrong secret and
// a wrong cluster label next to a cluster, and garbage on the raft channel
// from a legitimate mesh peer: the cluster keeps working.
func TestMeshForeignPeersCannotDisturb(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	lead := c.members[c.leader()]
	mustPut(t, lead, "k", "v")

	for _, tc := range []struct {
		name  string
		tweak func(*mesh.Config)
	}{
		{"wrong-secret", func(cfg *mesh.Config) { cfg.PSK = bytes.Repeat([]byte{6}, 32) }},
		{"wrong-label", func(cfg *mesh.Config) { cfg.ClusterLabel = "another-cluster" }},
	} {
		c.addMeshMember(3, 0, func(cfg *Config) { cfg.Join = true })
		c.routers[3].Stop() // replaced by the misconfigured one
		rcfg := c.meshRouterConfig(3, []string{hostAddr(0), hostAddr(1)})
		tc.tweak(&rcfg)
		r, err := mesh.New(rcfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.routers[3] = r
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.startMember(3, ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s: a member on a foreign mesh joined the cluster", tc.name)
		}
		testutil.Eventually(t, 10*time.Second, tc.name+": handshake refused and logged in status", func() bool {
			return len(c.routers[0].Status().HandshakeFailures) > 0 || len(r.Status().HandshakeFailures) > 0
		})
		if r.Reachable(c.routers[0].Name()) || c.routers[0].Reachable(r.Name()) {
			t.Fatalf("%s: foreign router reaches the cluster", tc.name)
		}
		r.Stop()
		c.routers[3] = nil
	}

	// A peer with the right secret that sends garbage on the raft channel.
	rcfg := c.meshRouterConfig(5, []string{hostAddr(0)})
	r, err := mesh.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	pc, err := meshconn.Listen(r, peer.RaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := meshconn.MeshAddr{Peer: c.routers[0].Name()}
	testutil.Eventually(t, 10*time.Second, "garbage sender reaches m0", func() bool { return r.Reachable(dst.Peer) })
	for i := 0; i < 100; i++ {
		pc.WriteTo([]byte{0xff, 0xff, byte(i), 0x01, 0x02}, dst)
	}
	testutil.Eventually(t, 10*time.Second, "garbage counted as malformed", func() bool { return meshStats(c.members[0]).Malformed > 0 })
	mustPut(t, c.members[0], "after-garbage", "ok")
	mustPut(t, c.members[c.leader()], "after-foreigners", "ok")
	if n := len(c.members[0].Members()); n != 3 {
		t.Fatalf("membership changed to %d members", n)
	}
}

func TestMeshRemovedMemberStops(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	ctx := testCtx(t)
	li := c.leader()
	lead := c.members[li]
	o := c.others(li)

	// A join that reaches a follower is forwarded to the leader.
	f0 := c.members[o[0]]
	joinReq := []byte(`{"name":"m7","peerURLs":["` + peerURL(7) + `"]}`)
	b, err := f0.handleJoin(ctx, peerURL(7)[len("http://"):], joinReq)
	if err != nil {
		t.Fatalf("join through a follower: %v", err)
	}
	var info clusterInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if m := lead.memberByPeerURLs([]string{peerURL(7)}); m == nil || !m.IsLearner || info.MemberID != m.ID || info.ClusterID != lead.ClusterID() {
		t.Fatalf("join through a follower: answer %s, leader's view %+v", b, m)
	}
	// Only one learner at a time (etcd's --max-learners 1).
	now := time.Now()
	second := membership.NewMemberAsLearner("", mustURLsMap(t, "x="+peerURL(8))["x"], "", &now)
	if _, err := lead.AddMember(ctx, *second); !errors.Is(err, membership.ErrTooManyLearners) {
		t.Fatalf("second learner: err = %v, want ErrTooManyLearners", err)
	}
	// A stranger cannot join with someone else's peer URLs.
	if _, err := f0.handleJoin(ctx, "10.9.9.9:2380", joinReq); err == nil {
		t.Fatal("join from a peer that does not own the URLs was accepted")
	}
	if _, err := lead.RemoveMember(ctx, uint64(lead.memberByPeerURLs([]string{peerURL(7)}).ID)); err != nil {
		t.Fatalf("remove the learner: %v", err)
	}

	// A member removed while it was down learns it from the others when it
	// comes back (etcd's peers answer it 410 Gone) and stops. Before that,
	// strict reconfiguration refuses to remove the other, active, follower:
	// with one member down that would leave no active quorum.
	downID := c.members[o[0]].MemberID()
	c.kill(o[0])
	testutil.Eventually(t, waitTimeout, "the leader sees the killed member inactive", func() bool {
		since, _ := lead.peers.ActiveSince(uint64(downID))
		return since.IsZero()
	})
	if _, err := lead.RemoveMember(ctx, uint64(c.members[o[1]].MemberID())); !errors.Is(err, servererrors.ErrUnhealthy) {
		t.Fatalf("removing an active member while another is down: err = %v, want ErrUnhealthy", err)
	}
	if _, err := lead.RemoveMember(ctx, uint64(downID)); err != nil {
		t.Fatalf("RemoveMember(down member): %v", err)
	}
	c.routers[o[0]] = c.startRouter(o[0], nil)
	if err := c.startMember(o[0], ctx); err != nil {
		t.Fatalf("restart removed member: %v", err)
	}
	back := c.members[o[0]]
	select {
	case <-back.StopNotify():
	case <-time.After(waitTimeout):
		t.Fatal("member removed while down kept running after restart")
	}
	if !errors.Is(back.Err(), ErrRemoved) {
		t.Fatalf("member removed while down: Err = %v, want ErrRemoved", back.Err())
	}
	c.routers[o[0]].Stop()
	c.members[o[0]], c.routers[o[0]] = nil, nil

	// A running member applies its own removal and stops.
	f := c.members[o[1]]
	if _, err := lead.RemoveMember(ctx, uint64(f.MemberID())); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	select {
	case <-f.StopNotify():
	case <-time.After(waitTimeout):
		t.Fatal("removed member kept running")
	}
	if !errors.Is(f.Err(), ErrRemoved) {
		t.Fatalf("removed member's Err = %v, want ErrRemoved", f.Err())
	}
	// grpcapi asks IsLearner on every request; a member no longer in its
	// own membership must answer, not panic (etcd's IsLocalMemberLearner
	// panics there).
	if f.IsLearner() {
		t.Fatal("removed member reports itself as a learner")
	}
	c.routers[o[1]].Stop()
	c.members[o[1]], c.routers[o[1]] = nil, nil

	// etcd's errors for the rest.
	if _, err := lead.RemoveMember(ctx, 0x1234); !errors.Is(err, membership.ErrIDNotFound) {
		t.Fatalf("RemoveMember(unknown) err = %v, want ErrIDNotFound", err)
	}
	if _, err := lead.PromoteMember(ctx, uint64(lead.MemberID())); !errors.Is(err, membership.ErrMemberNotLearner) {
		t.Fatalf("PromoteMember(voter) err = %v, want ErrMemberNotLearner", err)
	}
	if _, err := lead.RemoveMember(ctx, uint64(lead.MemberID())); !errors.Is(err, servererrors.ErrNotEnoughStartedMembers) {
		t.Fatalf("RemoveMember(last voter) err = %v, want ErrNotEnoughStartedMembers", err)
	}
	mustPut(t, lead, "after-removal", "ok")
}

// A keepalive forwarded by a follower must not wait on a leader that went
// silent (no answer ever comes over the mesh, unlike etcd's refused HTTP
// connection): the forward gives up on it at the leader change or after an
// election timeout and reaches the new leader, well before the request
// timeout (7 s), so a kept-alive lease survives the leader's loss.
func TestMeshLeaseRenewForwardedAcrossSilentLeader(t *testing.T) {
	c := newMeshCluster(t, 3, nil)
	ctx := testCtx(t)
	lead := c.leader()
	rest := c.others(lead)
	f := c.members[rest[0]]
	l, err := f.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 30})
	if err != nil {
		t.Fatalf("LeaseGrant: %v", err)
	}
	if _, err := f.LeaseRenew(ctx, lease.LeaseID(l.ID)); err != nil {
		t.Fatalf("LeaseRenew through follower: %v", err)
	}
	// The leader goes silent: data to it is accepted and never delivered.
	for _, i := range rest {
		c.nw.Blackhole(hostName(lead), hostName(i))
	}
	start := time.Now()
	ttl, err := f.LeaseRenew(ctx, lease.LeaseID(l.ID))
	took := time.Since(start)
	if err != nil || ttl != 30 {
		t.Fatalf("LeaseRenew through follower after the leader went silent = %d, %v (after %v); want 30", ttl, err, took)
	}
	if took > 5*time.Second {
		t.Errorf("LeaseRenew through follower took %v after the leader went silent, want < 5s", took)
	}
	start = time.Now()
	r, err := c.members[rest[1]].LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: l.ID})
	if err != nil || r.GrantedTTL != 30 {
		t.Fatalf("LeaseTimeToLive through follower = %v, %v (after %v)", r, err, time.Since(start))
	}
	t.Logf("renew after the leader went silent: %v", took.Round(time.Millisecond))
}
