package mesh

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// A relay drops a frame whose hop budget is spent instead of letting it
// circle while views disagree.
func TestForwardDecrementsTTLAndDropsAtOne(t *testing.T) {
	r, err := New(testConfig("relay"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Stop() }()
	out := relayThrough(r, &conn{remote: "next"}, 4)
	send := func(ttl uint8) {
		plain := appendEnvelope(nil, msgUnicast, ttl, 20, 0, "src", "dst", []byte("x"))
		f := r.pool.get(len(plain))
		copy(f.b[frameHeaderLen:], plain)
		env, err := parseEnvelope(f.envelope())
		if err != nil {
			t.Fatal(err)
		}
		r.forward(f, env)
	}
	send(1)
	if got := r.counters.dropTTL.Load(); got != 1 || len(out.queues[classBulk])+len(out.queues[classControl]) != 0 {
		t.Fatalf("ttl=1 frame forwarded (drops %d)", got)
	}
	send(5)
	f := <-out.queues[0]
	if env, _ := parseEnvelope(f.envelope()); env.ttl != 4 {
		t.Fatalf("forwarded ttl = %d, want 4", env.ttl)
	}
}

// A handler that never returns stalls only its own channel: the reader
// keeps going, heartbeats flow, other channels deliver.
func TestBlockedHandlerDoesNotStallConnection(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	b := c.start("b", nil, "a")
	block := make(chan struct{})
	defer close(block)
	if _, err := b.NewDatagramChannel(20, "stuck", PriorityInteractive, func(PeerName, []byte) { <-block }); err != nil {
		t.Fatal(err)
	}
	ib := &inbox{}
	if _, err := b.NewDatagramChannel(21, "fine", PriorityInteractive, ib.handler); err != nil {
		t.Fatal(err)
	}
	stuck, _ := a.NewDatagramChannel(20, "stuck", PriorityInteractive, func(PeerName, []byte) {})
	fine, _ := a.NewDatagramChannel(21, "fine", PriorityInteractive, func(PeerName, []byte) {})
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	for i := 0; i < 3*b.cfg.InboundQueueLen/2; i++ {
		_ = stuck.Send("b", []byte("x"))
	}
	testutil.Eventually(t, waitLong, "the other channel still delivers", func() bool {
		_ = fine.Send("b", []byte("ok"))
		return ib.has("a:ok")
	})
	testutil.Eventually(t, waitLong, "the stuck channel drops instead of blocking", func() bool {
		for _, ch := range b.Status().Channels {
			if ch.Name == "stuck" && ch.Dropped > 0 {
				return true
			}
		}
		return false
	})
	if lost := b.Status().Counters["connections_lost"]; lost != 0 {
		t.Fatalf("connection lost while a handler was blocked: %v", b.Status().RecentLosses)
	}
}

// Random link cuts, heals and peer restarts; afterwards the mesh must
// converge to one topology with everyone reachable, and Stop must leave
// no goroutines behind (checked by the cluster).
func TestChurnConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	c := newCluster(t)
	rng := rand.New(rand.NewPCG(42, 7))
	const n = 8
	names := make([]string, n)
	tweak := func(cfg *Config) { cfg.GossipInterval = 300 * time.Millisecond }
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i)
		var seeds []string
		if i > 0 {
			seeds = []string{names[0], names[i-1]}
		}
		c.start(names[i], tweak, seeds...)
	}
	for round := 0; round < 30; round++ {
		x, y := names[rng.IntN(n)], names[rng.IntN(n)]
		switch op := rng.IntN(4); {
		case op == 0 && x != y:
			c.net.Cut(x, y)
		case op == 1 && x != y:
			c.net.Blackhole(x, y)
		case op == 2:
			c.net.Heal(x, y)
		case op == 3 && x != names[0]:
			idx := 0
			for i, nm := range names {
				if nm == x {
					idx = i
				}
			}
			c.stop(x)
			c.start(x, tweak, names[0], names[(idx+n-1)%n])
		}
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
	}
	c.net.HealAll()
	testutil.Eventually(t, 60*time.Second, "one topology, everyone reachable", func() bool {
		ref := topologyView(c.routers[names[0]])
		for _, r := range c.routers {
			if topologyView(r) != ref || len(r.routes.Load().next) != n-1 {
				return false
			}
		}
		return true
	})
}
