package mesh

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh/memnet"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// testPSK keeps tests off the Argon2id cost of a password.
var testPSK = bytes.Repeat([]byte{7}, 32)

// testConfig is tuned for a loaded 2-core machine running -race: quick
// heartbeats, but a dead timeout generous enough not to flap.
func testConfig(name string) Config {
	cfg := DefaultConfig()
	cfg.Name = PeerName(name)
	cfg.NickName = "nick-" + name
	cfg.ClusterLabel = "test-cluster"
	cfg.PSK = testPSK
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.DeadTimeout = 2 * time.Second
	cfg.GossipInterval = 500 * time.Millisecond
	cfg.BackoffMin = 50 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	cfg.AuthFailureBackoff = 500 * time.Millisecond
	cfg.NameCollisionBackoff = 500 * time.Millisecond
	cfg.HandshakeTimeout = 2 * time.Second
	return cfg
}

// cluster is a set of routers on one memnet network.
type cluster struct {
	t       *testing.T
	net     *memnet.Network
	routers map[string]*Router
	addrs   map[string]string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	checkNoLeaks(t)
	return &cluster{t: t, net: memnet.New(), routers: map[string]*Router{}, addrs: map[string]string{}}
}

// start starts a router named name on host name, seeded with the given
// peers' addresses; tweak may adjust its config.
func (c *cluster) start(name string, tweak func(*Config), seeds ...string) *Router {
	c.t.Helper()
	cfg := testConfig(name)
	cfg.Transport = c.net.Host(name)
	cfg.ListenAddr = name + ":7946"
	cfg.Logger = zaptest.NewLogger(c.t, zaptest.Level(zap.WarnLevel)).Named(name)
	for _, s := range seeds {
		cfg.Seeds = append(cfg.Seeds, s+":7946")
	}
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		c.t.Fatalf("New(%s): %v", name, err)
	}
	if err := r.Start(context.Background()); err != nil {
		c.t.Fatalf("Start(%s): %v", name, err)
	}
	c.routers[name] = r
	c.addrs[name] = r.ListenAddr()
	c.t.Cleanup(func() { _ = r.Stop() })
	return r
}

func (c *cluster) stop(name string) {
	c.t.Helper()
	if err := c.routers[name].Stop(); err != nil {
		c.t.Fatalf("Stop(%s): %v", name, err)
	}
	delete(c.routers, name)
}

// relayThrough makes the router r, which has no real connections, a relay
// whose route to "dst" goes through out (a connection without goroutines
// whose queues hold queueLen frames each), and returns out.
func relayThrough(r *Router, out *conn, queueLen int) *conn {
	out.r = r
	out.wake = make(chan struct{}, 1)
	for i := range out.queues {
		out.queues[i] = make(chan *frameBuf, queueLen)
	}
	table := map[PeerName]*conn{out.remote: out}
	r.conns.published.Store(&table)
	r.routes.Store(&routeTable{self: r.name, next: map[PeerName]PeerName{"dst": out.remote}, hops: map[PeerName]int{"dst": 2}})
	return out
}

// testChannel opens datagram channel 20 on r, delivering into in (or
// nowhere if in is nil).
func testChannel(t *testing.T, r *Router, in *inbox) *DatagramChannel {
	t.Helper()
	h := func(PeerName, []byte) {}
	if in != nil {
		h = in.handler
	}
	ch, err := r.NewDatagramChannel(20, "t", PriorityInteractive, h)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// eventually polls cond until it holds or timeout passes.
// topologyView renders what r knows: each peer with its established
// connections, to compare views between routers.
func topologyView(r *Router) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, n := range r.topo.sortedNames() {
		rec := r.topo.records[n]
		fmt.Fprintf(&b, "%s:%016x:", n, rec.UID)
		for _, c := range rec.Conns {
			if c.Established {
				fmt.Fprintf(&b, " %s", c.Peer)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// inbox collects datagrams for assertions.
type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (i *inbox) handler(src PeerName, payload []byte) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.msgs = append(i.msgs, string(src)+":"+string(payload))
}

func (i *inbox) has(msg string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Contains(i.msgs, msg)
}

func (i *inbox) count(msg string) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	n := 0
	for _, m := range i.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// checkNoLeaks fails the test if goroutines started during it outlive it.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after Stop\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
