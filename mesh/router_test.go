package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

func TestConfigValidation(t *testing.T) {
	base := testConfig("a")
	cases := map[string]func(*Config){
		"no name":               func(c *Config) { c.Name = "" },
		"name with slash":       func(c *Config) { c.Name = "a/b" },
		"name with space":       func(c *Config) { c.Name = "a b" },
		"name too long":         func(c *Config) { c.Name = PeerName(strings.Repeat("x", 65)) },
		"no secret":             func(c *Config) { c.PSK = nil },
		"secret and plaintext":  func(c *Config) { c.InsecurePlaintext = true },
		"short psk":             func(c *Config) { c.PSK = []byte("short") },
		"password and psk":      func(c *Config) { c.Password = "pw" },
		"dead below heartbeats": func(c *Config) { c.DeadTimeout = c.HeartbeatInterval },
		"long nickname":         func(c *Config) { c.NickName = strings.Repeat("n", 65) },
		"huge datagram":         func(c *Config) { c.MaxDatagramSize = 64 << 20 },
	}
	for name, mutate := range cases {
		cfg := base
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
	if _, err := New(base); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestPasswordModeConnects(t *testing.T) {
	c := newCluster(t)
	pw := func(cfg *Config) {
		cfg.PSK = nil
		cfg.Password = "correct horse battery staple"
		cfg.KDFMemoryKiB = 8 * 1024 // keep the test cheap; production uses 64 MiB
	}
	a := c.start("a", pw)
	c.start("b", pw, "a")
	testutil.Eventually(t, waitLong, "password-derived keys agree", func() bool { return a.Reachable("b") })
}

func TestSimultaneousDialKeepsOneConnection(t *testing.T) {
	for i := 0; i < 5; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			c := newCluster(t)
			a := c.start("a", nil, "b")
			b := c.start("b", nil, "a")
			testutil.Eventually(t, waitLong, "one agreed connection each way", func() bool {
				sa, sb := a.Status(), b.Status()
				return len(sa.Connections) == 1 && len(sb.Connections) == 1 &&
					sa.Connections[0].State == "established" && sb.Connections[0].State == "established" &&
					sa.Connections[0].Direction != sb.Connections[0].Direction
			})
			// Stable: the surviving connection is not torn down afterwards.
			time.Sleep(300 * time.Millisecond)
			if lost := a.Status().Counters["connections_lost"] + b.Status().Counters["connections_lost"]; lost != 0 {
				t.Fatalf("%d connections lost after the tie-break: a %v, b %v", lost, a.Status().RecentLosses, b.Status().RecentLosses)
			}
		})
	}
}

func TestNameCollisionIsRefusedLoudly(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	x1 := c.start("x1", func(cfg *Config) { cfg.Name = "x" }, "a")
	testutil.Eventually(t, waitLong, "a reaches the first x", func() bool { return a.Reachable("x") })
	x2 := c.start("x2", func(cfg *Config) { cfg.Name = "x" }, "a")
	collision := func() bool {
		for _, f := range a.Status().HandshakeFailures {
			if strings.Contains(f.Error, ErrNameCollision.Error()) {
				return true
			}
		}
		return x1.Status().NameCollision != "" || x2.Status().NameCollision != ""
	}
	testutil.Eventually(t, waitLong, "the collision is reported", collision)
	// No version war: x's record at a settles down.
	version := func() uint64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if r := a.topo.records["x"]; r != nil {
			return r.Version
		}
		return 0
	}
	time.Sleep(time.Second)
	before := version()
	time.Sleep(2 * time.Second)
	if after := version(); after > before+10 {
		t.Fatalf("x's version keeps climbing (%d → %d): a version war", before, after)
	}
}

func TestAcceptFloodIsThrottled(t *testing.T) {
	checkNoLeaks(t)
	a := startTCPRouter(t, "a", func(cfg *Config) {
		cfg.AcceptBurst, cfg.AcceptRate = 5, 2
		cfg.PerIPBurst, cfg.PerIPAcceptRate = 5, 2
	})
	var conns []net.Conn
	for i := 0; i < 40; i++ {
		nc, err := net.Dial("tcp", a.ListenAddr())
		if err != nil {
			continue
		}
		conns = append(conns, nc)
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	testutil.Eventually(t, waitLong, "throttle engaged", func() bool { return a.Status().Counters["accept_throttled"] > 0 })
	if n := a.Status().Counters["accept_throttled"]; n > 40 {
		t.Fatalf("throttled %d of 40 connections", n)
	}
	// The router still accepts a real peer once tokens refill.
	b := startTCPRouter(t, "b", nil, a.ListenAddr())
	testutil.Eventually(t, waitLong, "b connects after the flood", func() bool { return a.Reachable("b") && b.Reachable("a") })
}

func TestTokenBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := tokenBucket{rate: 2, burst: 3, tokens: 3, last: now}
	for i := 0; i < 3; i++ {
		if !b.take(now) {
			t.Fatalf("take %d refused within burst", i)
		}
	}
	if b.take(now) {
		t.Fatal("take beyond burst allowed")
	}
	if !b.take(now.Add(500 * time.Millisecond)) {
		t.Fatal("no refill after 500ms at 2/s")
	}
	if b.take(now.Add(500 * time.Millisecond)) {
		t.Fatal("refilled more than the rate")
	}
}

func TestStatusHandlerServesJSON(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	c.start("b", nil, "a")
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	srv := httptest.NewServer(a.StatusHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/mesh/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Name != "a" || len(st.Routes) != 1 || st.Routes[0].Dest != "b" || !st.Encrypted {
		t.Fatalf("unexpected status: %+v", st)
	}
	if len(st.Connections) != 1 || st.Connections[0].Peer != "b" || st.Connections[0].State != "established" {
		t.Fatalf("unexpected connections: %+v", st.Connections)
	}
	post, err := srv.Client().Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != 405 {
		t.Fatalf("POST got %d, want 405", post.StatusCode)
	}
}

func TestSlowRouteSubscriberGetsLatestStateWithoutBlocking(t *testing.T) {
	s := &routeSub{pending: map[PeerName]RouteEvent{}, notify: make(chan struct{}, 1)}
	for i := 0; i < 1000; i++ {
		s.push([]RouteEvent{{Peer: "b", Reachable: i%2 == 0, NextHop: PeerName(fmt.Sprint(i))}, {Peer: "c", Reachable: true, NextHop: "c"}})
	}
	ev, ok := s.pop()
	if !ok || ev.Peer != "b" || ev.NextHop != "999" || ev.Reachable {
		t.Fatalf("first event = %+v, want b's latest", ev)
	}
	if ev, _ := s.pop(); ev.Peer != "c" {
		t.Fatalf("second event = %+v", ev)
	}
	if _, ok := s.pop(); ok {
		t.Fatal("events were not coalesced")
	}
}

func TestSendErrors(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	ch := testChannel(t, a, nil)
	if err := ch.Send("nobody", []byte("x")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("send to unknown peer: %v", err)
	}
	if err := ch.Send("nobody", make([]byte, ch.MaxPayload()+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
	if _, err := a.NewDatagramChannel(20, "dup", PriorityInteractive, func(PeerName, []byte) {}); err == nil {
		t.Fatal("duplicate channel id accepted")
	}
	if _, err := a.NewDatagramChannel(3, "reserved", PriorityInteractive, func(PeerName, []byte) {}); err == nil {
		t.Fatal("reserved channel id accepted")
	}
	self := &inbox{}
	loop, err := a.NewDatagramChannel(21, "loop", PriorityInteractive, self.handler)
	if err != nil {
		t.Fatal(err)
	}
	if err := loop.Send("a", []byte("me")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, "loopback delivery", func() bool { return self.has("a:me") })
	c.stop("a")
	if err := ch.Send("b", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after Stop: %v", err)
	}
}

// blockingListenTransport's listen hangs until its context ends.
type blockingListenTransport struct{ Transport }

func (blockingListenTransport) ListenContext(ctx context.Context, _ string) (net.Listener, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// lateListenTransport listens, but only after delay, and without a context.
type lateListenTransport struct {
	Transport
	delay time.Duration
}

func (t lateListenTransport) Listen(address string) (net.Listener, error) {
	time.Sleep(t.delay)
	return t.Transport.Listen(address)
}

// Start's context bounds the start: a listen that does not finish in time
// fails the start, and a listener that comes back too late is closed.
func TestStartHonoursItsContext(t *testing.T) {
	checkNoLeaks(t)
	nw := memnet.New()
	for name, tr := range map[string]Transport{
		"blocking": blockingListenTransport{nw.Host("blocking")},
		"late":     lateListenTransport{nw.Host("late"), 300 * time.Millisecond},
	} {
		cfg := testConfig(name)
		cfg.Transport = tr
		cfg.ListenAddr = name + ":7946"
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err = r.Start(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Start = %v, want the context's deadline", name, err)
		}
		if name == "blocking" && time.Since(start) > 5*time.Second {
			t.Fatalf("%s: Start took %v past its deadline", name, time.Since(start))
		}
		if err := r.Stop(); err != nil {
			t.Fatalf("%s: Stop after a failed Start: %v", name, err)
		}
		l, err := nw.Host(name).Listen(cfg.ListenAddr)
		if err != nil {
			t.Fatalf("%s: the failed start left its listener open: %v", name, err)
		}
		_ = l.Close()
	}
}

// offsetClock is the system clock moved by a settable offset.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Status tells connection ages by Config.Clock, like everything else the
// router records.
func TestStatusUsesTheConfiguredClock(t *testing.T) {
	c := newCluster(t)
	clock := &offsetClock{}
	a := c.start("a", func(cfg *Config) { cfg.Clock = clock })
	c.start("b", nil, "a")
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	clock.offset.Store(int64(time.Hour))
	st := a.Status()
	if len(st.Connections) == 0 || !strings.HasPrefix(st.Connections[0].Since, "1h0m") {
		t.Fatalf("connection age after moving a's clock an hour ahead: %+v", st.Connections)
	}
}
