package mesh

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

const waitLong = 20 * time.Second

// lineCluster builds A–B–C–D where only neighbours can reach each other.
func lineCluster(t *testing.T, tweak func(*Config)) (*cluster, map[string]*inbox, map[string]*DatagramChannel) {
	c := newCluster(t)
	names := []string{"a", "b", "c", "d"}
	for i := range names {
		for j := range names {
			if j > i+1 {
				c.net.Cut(names[i], names[j])
			}
		}
	}
	inboxes := map[string]*inbox{}
	chans := map[string]*DatagramChannel{}
	for i, n := range names {
		var seeds []string
		if i > 0 {
			seeds = []string{names[i-1]}
		}
		r := c.start(n, tweak, seeds...)
		ib := &inbox{}
		ch, err := r.NewDatagramChannel(20, "test", PriorityInteractive, ib.handler)
		if err != nil {
			t.Fatal(err)
		}
		inboxes[n], chans[n] = ib, ch
	}
	return c, inboxes, chans
}

func TestLineUnicastAndBroadcast(t *testing.T) {
	c, inboxes, chans := lineCluster(t, nil)
	a := c.routers["a"]
	testutil.Eventually(t, waitLong, "a reaches d", func() bool { return a.Reachable("d") })
	if hop, _ := a.routes.Load().nextHop("d"); hop != "b" {
		t.Fatalf("next hop a→d = %q, want b", hop)
	}
	// Datagrams are best effort; resend until one arrives.
	testutil.Eventually(t, waitLong, "a→d datagram delivered through b and c", func() bool {
		_ = chans["a"].Send("d", []byte("hello"))
		return inboxes["d"].has("a:hello")
	})
	if inboxes["b"].has("a:hello") || inboxes["c"].has("a:hello") {
		t.Fatal("relays delivered a datagram addressed to d")
	}
	if got := c.routers["b"].Status().Counters["forwarded"]; got == 0 {
		t.Fatal("b forwarded nothing")
	}
	// And back: d→a.
	testutil.Eventually(t, waitLong, "d→a datagram", func() bool {
		_ = chans["d"].Send("a", []byte("back"))
		return inboxes["a"].has("d:back")
	})

	// Broadcast through a gossip channel reaches every peer exactly once.
	counters := map[string]*countingGossiper{}
	gcs := map[string]*GossipChannel{}
	for n, r := range c.routers {
		g := newCountingGossiper()
		gc, err := r.NewGossip(30, "counter", g)
		if err != nil {
			t.Fatal(err)
		}
		counters[n], gcs[n] = g, gc
	}
	// Wait until every router sees the full line before broadcasting, so the
	// spanning trees agree.
	for _, n := range []string{"a", "b", "c", "d"} {
		r := c.routers[n]
		testutil.Eventually(t, waitLong, n+" has routes to all", func() bool {
			return len(r.Status().Routes) == 3
		})
	}
	gcs["b"].GossipBroadcast(broadcastMsg("from-b"))
	for _, n := range []string{"a", "c", "d"} {
		g := counters[n]
		testutil.Eventually(t, waitLong, n+" got broadcast", func() bool { return g.broadcasts("b", "from-b") == 1 })
	}
	time.Sleep(300 * time.Millisecond) // give duplicates a chance to show up
	for _, n := range []string{"a", "c", "d"} {
		if got := counters[n].broadcasts("b", "from-b"); got != 1 {
			t.Fatalf("%s received the broadcast %d times, want 1", n, got)
		}
	}
	if got := counters["b"].broadcasts("b", "from-b"); got != 0 {
		t.Fatalf("the source delivered its own broadcast %d times", got)
	}
}

func TestCutLinkReroutesAndHeals(t *testing.T) {
	c := newCluster(t)
	// A square a–b–c–d–a: cutting b–c leaves the path through a and d.
	for _, p := range [][2]string{{"a", "c"}, {"b", "d"}} {
		c.net.Cut(p[0], p[1])
	}
	c.start("a", nil)
	c.start("b", nil, "a")
	c.start("d", nil, "a")
	c.start("c", nil, "b", "d")
	b := c.routers["b"]
	testutil.Eventually(t, waitLong, "b routes to c directly", func() bool {
		hop, ok := b.routes.Load().nextHop("c")
		return ok && hop == "c"
	})
	events, cancel := b.SubscribeRoutes(16)
	defer cancel()
	c.net.Cut("b", "c")
	testutil.Eventually(t, waitLong, "b reroutes to c via a", func() bool {
		hop, ok := b.routes.Load().nextHop("c")
		return ok && hop == "a"
	})
	sawReroute := false
	timeout := time.After(waitLong)
	for !sawReroute {
		select {
		case ev := <-events:
			sawReroute = ev.Peer == "c" && ev.Reachable && ev.NextHop == "a"
		case <-timeout:
			t.Fatal("no route event for the reroute")
		}
	}
	c.net.Heal("b", "c")
	testutil.Eventually(t, waitLong, "b reconnects to c", func() bool {
		hop, ok := b.routes.Load().nextHop("c")
		return ok && hop == "c"
	})
	testutil.Eventually(t, waitLong, "all views converge", func() bool {
		v := topologyView(c.routers["a"])
		for _, r := range c.routers {
			if topologyView(r) != v {
				return false
			}
		}
		return true
	})
}

func TestTwentyFivePeersConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	c := newCluster(t)
	const n = 25
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%02d", i)
		var seeds []string
		if i > 0 {
			seeds = []string{fmt.Sprintf("p%02d", (i-1)/2)} // a tree of seeds
		}
		// 25 routers in one process under -race are far more load than one
		// router per process; this test is about convergence, so liveness
		// is relaxed to keep heartbeats from dominating the CPU.
		c.start(name, func(cfg *Config) {
			cfg.GossipInterval = time.Second
			cfg.HeartbeatInterval = 300 * time.Millisecond
			cfg.DeadTimeout = 5 * time.Second
		}, seeds...)
	}
	converged := func() bool {
		v := topologyView(c.routers["p00"])
		for _, r := range c.routers {
			if topologyView(r) != v || len(r.routes.Load().next) != n-1 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !converged() {
		if time.Now().After(deadline) {
			ref := topologyView(c.routers["p00"])
			for name, r := range c.routers {
				if v := topologyView(r); v != ref || len(r.routes.Load().next) != n-1 {
					st := r.Status()
					t.Logf("%s differs (%d routes, %d conns, %d lost %v, failures %v):\n%s", name, len(r.routes.Load().next), len(st.Connections),
						st.Counters["connections_lost"], st.RecentLosses, st.HandshakeFailures, v)
				}
			}
			t.Fatalf("25 peers did not converge; p00 sees:\n%s", ref)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRestartedPeerIsNewIncarnation(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	b := c.start("b", nil, "a")
	oldUID := b.UID()
	events, cancel := a.SubscribeRoutes(16)
	defer cancel()
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	c.stop("b")
	b2 := c.start("b", nil, "a")
	if b2.UID() == oldUID {
		t.Fatal("restart kept the UID")
	}
	timeout := time.After(waitLong)
	for {
		select {
		case ev := <-events:
			if ev.Peer == "b" && ev.Reachable && ev.UID == b2.UID() {
				testutil.Eventually(t, waitLong, "a's topology holds the new incarnation", func() bool {
					a.mu.Lock()
					defer a.mu.Unlock()
					rec := a.topo.records["b"]
					return rec != nil && rec.UID == b2.UID()
				})
				return
			}
		case <-timeout:
			t.Fatal("no route event with b's new UID")
		}
	}
}

func TestPartitionHealsWithoutReseeding(t *testing.T) {
	c := newCluster(t)
	tweak := func(cfg *Config) { cfg.GCGrace = 500 * time.Millisecond; cfg.DeadTimeout = time.Second }
	c.start("a", tweak)
	c.start("b", tweak, "a")
	c.start("c", tweak, "a")
	c.start("d", tweak, "c")
	for _, r := range c.routers {
		testutil.Eventually(t, waitLong, "full reachability", func() bool { return len(r.routes.Load().next) == 3 })
	}
	c.net.Partition([]string{"a", "b"}, []string{"c", "d"})
	a, d := c.routers["a"], c.routers["d"]
	testutil.Eventually(t, waitLong, "a loses c and d", func() bool { return !a.Reachable("c") && !a.Reachable("d") })
	testutil.Eventually(t, waitLong, "a collects d into a tombstone", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		_, ok := a.topo.tombstones["d"]
		return ok
	})
	c.net.HealAll()
	testutil.Eventually(t, waitLong, "a reaches d again", func() bool { return a.Reachable("d") && d.Reachable("a") })
}

// countingGossiper counts broadcasts by (src, payload).
type countingGossiper struct {
	mu   chan struct{}
	seen map[string]int
}

func newCountingGossiper() *countingGossiper {
	g := &countingGossiper{mu: make(chan struct{}, 1), seen: map[string]int{}}
	return g
}

func (g *countingGossiper) lock()   { g.mu <- struct{}{} }
func (g *countingGossiper) unlock() { <-g.mu }

func (g *countingGossiper) broadcasts(src, msg string) int {
	g.lock()
	defer g.unlock()
	return g.seen[src+":"+msg]
}

func (g *countingGossiper) OnGossipUnicast(PeerName, []byte) error { return nil }
func (g *countingGossiper) OnGossipBroadcast(src PeerName, update []byte) error {
	g.lock()
	defer g.unlock()
	g.seen[string(src)+":"+string(update)]++
	return nil
}
func (g *countingGossiper) Gossip() GossipData                  { return nil }
func (g *countingGossiper) OnGossip([]byte) (GossipData, error) { return nil, nil }

type broadcastMsg string

func (m broadcastMsg) Encode() [][]byte            { return [][]byte{[]byte(m)} }
func (m broadcastMsg) Merge(GossipData) GossipData { return m }
