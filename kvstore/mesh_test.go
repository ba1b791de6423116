package kvstore

import (
	"bytes"
	"context"
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
	"go.etcd.io/etcd/server/v3/lease"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
	"github.com/meshetcd/meshetcd/raftnode"
)

var meshTestPSK = bytes.Repeat([]byte{5}, 32)

const meshTestLabel = "kvstore-mesh-test"

// meshCluster runs members each with its own mesh router on one memnet
// network. Member i lives on memnet host "h<i>", listens on "h<i>:2380" and
// has the peer URL http://127.0.0.1:<28100+i> (its mesh peer name).
type meshCluster struct {
	t       *testing.T
	nw      *memnet.Network
	base    string
	cfgs    []Config
	routers []*mesh.Router
	members []*Server
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
	t.Helper()
	c := &meshCluster{t: t, nw: memnet.New(), base: t.TempDir()}
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
	cfg := mesh.DefaultConfig()
	name, err := raftnode.PeerNameFromURLs([]string{peerURL(i)})
	if err != nil {
		c.t.Fatal(err)
	}
	cfg.Name = name
	cfg.NickName = fmt.Sprintf("m%d", i)
	cfg.ClusterLabel = meshTestLabel
	cfg.PSK = meshTestPSK
	cfg.Transport = c.nw.Host(hostName(i))
	cfg.ListenAddr = hostAddr(i)
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.DeadTimeout = 2 * time.Second
	cfg.BackoffMin = 50 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	cfg.AuthFailureBackoff = 500 * time.Millisecond
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.MaxDatagramSize = MeshMaxDatagramSize(Config{})
	cfg.Logger = zaptest.NewLogger(c.t, zaptest.Level(zapcore.ErrorLevel)).Named(fmt.Sprintf("mesh%d", i))
	if seeds == nil {
		for j := 0; j < len(c.cfgs); j++ {
			if j != i {
				seeds = append(seeds, hostAddr(j))
			}
		}
	}
	cfg.Seeds = seeds
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

func (c *meshCluster) startMember(i int, ctx context.Context) error {
	cfg := c.cfgs[i]
	cfg.Mesh = c.routers[i]
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

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	st := f.tr.Stats()
	if st.Sent == 0 || st.Received == 0 {
		t.Fatalf("mesh transport stats %+v: nothing went over the mesh", st)
	}
	t.Logf("follower transport stats: %+v", st)
}
