package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// A neighbour that stops reading must not hold up traffic to anyone else:
// sends never block, its queue fills and reports ErrQueueFull, and the
// connection is dropped once it stops answering pings.
func TestStalledPeerDoesNotBlockOthers(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	c.start("b", nil, "a")
	c.start("c", nil, "a")
	c.net.Cut("b", "c") // only a links them
	ib, ic := &inbox{}, &inbox{}
	testChannel(t, c.routers["b"], ib)
	testChannel(t, c.routers["c"], ic)
	ch := testChannel(t, a, nil)
	testutil.Eventually(t, waitLong, "a reaches b and c", func() bool { return a.Reachable("b") && a.Reachable("c") })

	c.net.StallReads("b", true)
	big := bytes.Repeat([]byte{1}, 256<<10)
	sawFull := false
	start := time.Now()
	for i := 0; i < 1000 && !sawFull; i++ {
		err := ch.Send("b", big)
		switch {
		case errors.Is(err, ErrQueueFull), errors.Is(err, ErrNoRoute):
			sawFull = true
		case err != nil:
			t.Fatalf("send to stalled b: %v", err)
		}
	}
	if !sawFull {
		t.Fatal("a accepted 250 MiB for a peer that does not read")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("sends to a stalled peer took %v: they must not block", d)
	}
	for i := 0; i < 20; i++ {
		msg := fmt.Sprintf("m%d", i)
		testutil.Eventually(t, waitLong, "a→c while b is stalled", func() bool {
			_ = ch.Send("c", []byte(msg))
			return ic.has("a:" + msg)
		})
	}
	testutil.Eventually(t, waitLong, "a drops the connection to the stalled b", func() bool { return a.connFor("b") == nil })
	c.net.StallReads("b", false)
	testutil.Eventually(t, waitLong, "b comes back", func() bool { return a.Reachable("b") })
}

// A link that goes silent without a reset is detected by the heartbeat
// timeout and routed around, well inside a Raft election timeout.
func TestBlackholedLinkIsRoutedAround(t *testing.T) {
	c := newCluster(t)
	fast := func(cfg *Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.DeadTimeout = 700 * time.Millisecond
	}
	a := c.start("a", fast)
	c.start("b", fast, "a")
	c.start("relay", fast, "a", "b")
	ib := &inbox{}
	testChannel(t, c.routers["b"], ib)
	ch := testChannel(t, a, nil)
	testutil.Eventually(t, waitLong, "a routes to b directly", func() bool {
		hop, ok := a.routes.Load().nextHop("b")
		return ok && hop == "b" && a.Reachable("relay") && c.routers["b"].Reachable("relay")
	})
	c.net.Blackhole("a", "b")
	cut := time.Now()
	testutil.Eventually(t, waitLong, "a routes to b via relay", func() bool {
		hop, ok := a.routes.Load().nextHop("b")
		return ok && hop == "relay"
	})
	t.Logf("rerouted %v after the blackhole", time.Since(cut))
	testutil.Eventually(t, waitLong, "a→b delivered via relay", func() bool {
		_ = ch.Send("b", []byte("around"))
		return ib.has("a:around")
	})
}

// Datagrams queued on a connection that dies are moved to another route
// instead of being lost with it.
func TestQueuedDatagramsRerouteOnConnectionLoss(t *testing.T) {
	c, a, ch, ib := relayTriangle(t)
	// a must already know the way around (relay's record listing b, b's
	// listing relay): frames rerouted before it does have no route.
	testutil.Eventually(t, waitLong, "a routes to b directly and knows relay's link to b", func() bool {
		hop, ok := a.routes.Load().nextHop("b")
		return ok && hop == "b" && knowsLink(a, "relay", "b") && knowsLink(a, "b", "relay")
	})
	// Slow the a→b direction to a trickle so a's frames pile up in its
	// queue for b, then cut the link. Only that direction: stalling b's
	// reads would stall its link from the relay too, and a relay that
	// gave up on b meanwhile drops the rerouted frames (seen under load).
	c.net.SetBandwidth("a", "b", 1<<10)
	payload := bytes.Repeat([]byte{2}, 32<<10)
	for i := 0; i < 40; i++ {
		if err := ch.Send("b", append([]byte(fmt.Sprintf("q%02d:", i)), payload...)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	testutil.Eventually(t, waitLong, "frames queued for b", func() bool {
		conn := a.connFor("b")
		return conn != nil && conn.queuedBytes.Load() > 0
	})
	c.net.Cut("a", "b")
	t.Cleanup(func() {
		if t.Failed() {
			hop, ok := a.routes.Load().nextHop("b")
			t.Logf("a: next hop to b %q (%v), counters %v", hop, ok, a.Status().Counters)
		}
	})
	testutil.Eventually(t, waitLong, "queued frames rerouted", func() bool { return a.Status().Counters["rerouted"] > 0 })
	testutil.Eventually(t, waitLong, "rerouted frames delivered to b", func() bool {
		ib.mu.Lock()
		defer ib.mu.Unlock()
		return len(ib.msgs) > 0
	})
}

// relayTriangle starts a, b dialling a, and a relay dialling both, with
// a test channel on a (returned) and on b feeding the returned inbox.
func relayTriangle(t *testing.T) (c *cluster, a *Router, ch *DatagramChannel, ib *inbox) {
	t.Helper()
	c = newCluster(t)
	a = c.start("a", nil)
	c.start("b", nil, "a")
	c.start("relay", nil, "a", "b")
	ib = &inbox{}
	testChannel(t, c.routers["b"], ib)
	return c, a, testChannel(t, a, nil), ib
}

// knowsLink reports whether r's topology has from's record listing an
// established connection to to.
func knowsLink(r *Router, from, to PeerName) bool {
	for _, p := range r.Status().Peers {
		if p.Name == from {
			return slices.Contains(p.Connections, string(to))
		}
	}
	return false
}

func TestDedupWindow(t *testing.T) {
	w := dedupWindow{}
	for _, tc := range []struct {
		seq  uint64
		want bool
	}{{100, true}, {100, false}, {99, true}, {99, false}, {200, true}, {150, true}, {136, false}, {137, true}, {137, false}} {
		if got := w.observe(tc.seq); got != tc.want {
			t.Fatalf("observe(%d) = %v, want %v", tc.seq, got, tc.want)
		}
	}
}

// The Lifeguard rules of judgeLink, deterministically (liveness.go).
func TestJudgeLink(t *testing.T) {
	base := time.Unix(1000, 0)
	ms := func(n int) time.Time { return base.Add(time.Duration(n) * time.Millisecond) }
	ev := func(now, recv, pong, others, suspect int) linkEvidence {
		e := linkEvidence{now: ms(now), lastRecv: ms(recv), lastPong: ms(pong),
			dead: 600 * time.Millisecond, suspect: 450 * time.Millisecond, backstop: 1200 * time.Millisecond, heartbeat: 150 * time.Millisecond}
		if others >= 0 {
			e.othersRecv = ms(others)
		}
		if suspect >= 0 {
			e.suspectedSince = ms(suspect)
		}
		return e
	}
	const none = -1
	for _, tc := range []struct {
		name string
		e    linkEvidence
		want linkVerdict
		err  error
	}{
		{"fresh", ev(1000, 900, 900, 950, none), linkAlive, nil},
		{"silent first check: only suspect", ev(1000, 300, 300, 990, none), linkSuspect, nil},
		{"a heartbeat short of the timeout: suspect", ev(1000, 500, 500, 990, none), linkSuspect, nil},
		{"suspect but not yet past the timeout", ev(1000, 500, 500, 990, 900), linkSuspect, nil},
		{"silent, confirmed a check later with a witness", ev(1150, 300, 300, 1100, 1000), linkDead, errDeadLink},
		{"confirmation too soon after suspicion", ev(1050, 300, 300, 1040, 1000), linkSuspect, nil},
		{"no witness: every link silent, we are the slow one", ev(1150, 300, 300, 320, 1000), linkSuspect, nil},
		{"alone: no other link, trust the timer", ev(1150, 300, 300, none, 1000), linkDead, errDeadLink},
		{"frames arrive, pings unanswered past the backstop (one-way)", ev(1550, 1540, 300, 320, 1000), linkDead, errNoPong},
		{"frames arrive, pings unanswered less than the backstop: suspect (a starved answerer)", ev(1150, 1140, 300, 320, 1000), linkSuspect, nil},
		{"backstop: silent 2 x dead timeout whatever the evidence", ev(1600, 300, 300, 320, none), linkDead, errDeadLink},
		{"a check that ran late (we were starved) suspects but does not confirm", func() linkEvidence {
			e := ev(1150, 300, 300, 1100, 1000)
			e.awakeSince = e.now
			return e
		}(), linkSuspect, nil},
		{"a late check does not even trust the backstop (readers may lag)", func() linkEvidence {
			e := ev(1600, 300, 300, 1590, 1000)
			e.awakeSince = e.now
			return e
		}(), linkSuspect, nil},
		{"silence before our own starvation does not count towards death", func() linkEvidence {
			e := ev(1300, 300, 300, 1290, 1000)
			e.awakeSince = ms(1000)
			return e
		}(), linkSuspect, nil},
		{"unanswered pings before our own starvation do not count either", func() linkEvidence {
			e := ev(1300, 1290, 300, 1290, 1000)
			e.awakeSince = ms(1000)
			return e
		}(), linkSuspect, nil},
		{"a dead timeout of silence after we woke: confirmed", func() linkEvidence {
			e := ev(1650, 300, 300, 1640, 1000)
			e.awakeSince = ms(1000)
			return e
		}(), linkDead, errDeadLink},
		{"health-scaled timeout not yet reached: suspect (rerouted), not dead", func() linkEvidence {
			e := ev(1000, 200, 200, 990, 800)
			e.dead = 900 * time.Millisecond
			return e
		}(), linkSuspect, nil},
	} {
		got, err := judgeLink(tc.e)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: got %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// A truly dead link, judged check by check the way the liveness loop
// does (every heartbeat, at any phase relative to the link's last frame,
// with the other links delivering): with the defaults, traffic leaves it
// by the dead timeout whatever the local health, and it is declared dead
// inside Raft's default 1 s election timeout when the process is healthy
// and within the starved bound (1.5 × dead timeout plus a check) when it
// was starved a while ago. While every check runs late (starving now) the
// loop only suspects: traffic still leaves by the dead timeout and the
// reader's deadline (3 × DeadTimeout) closes the link.
func TestDeadLinkDetectedInsideElectionTimeout(t *testing.T) {
	cfg := DefaultConfig()
	const electionTimeout = time.Second
	hb := cfg.HeartbeatInterval
	for _, tc := range []struct {
		name      string
		score     int32
		deadBound time.Duration // 0: the loop must not confirm
		starving  bool
	}{
		{"healthy", 0, electionTimeout, false},
		{"starved", maxLocalHealth, cfg.DeadTimeout*3/2 + hb, false},
		{"starving now", maxLocalHealth, 0, true},
	} {
		for _, phase := range []time.Duration{time.Millisecond, hb / 2, hb - time.Millisecond} {
			var h localHealth
			h.score.Store(tc.score)
			lastFrame := time.Unix(1000, 0) // the link's last frame; silence from here on
			var suspectedSince time.Time
			var suspectAt, deadAt time.Duration
			for now := lastFrame.Add(phase); deadAt == 0 && now.Sub(lastFrame) < 10*time.Second; now = now.Add(hb) {
				var awake time.Time
				if tc.starving {
					awake = now
				}
				e := newLinkEvidence(&cfg, &h, now, awake)
				e.lastRecv, e.lastPong = lastFrame, lastFrame
				e.othersRecv = now.Add(-hb / 10) // the other links deliver
				e.suspectedSince = suspectedSince
				switch v, _ := judgeLink(e); v {
				case linkSuspect:
					if suspectedSince.IsZero() {
						suspectedSince, suspectAt = now, now.Sub(lastFrame)
					}
				case linkDead:
					deadAt = now.Sub(lastFrame)
				}
			}
			if suspectAt == 0 || suspectAt > cfg.DeadTimeout {
				t.Errorf("%s, phase %v: traffic left the dead link after %v, want by the dead timeout %v", tc.name, phase, suspectAt, cfg.DeadTimeout)
			}
			if tc.deadBound == 0 {
				if deadAt != 0 {
					t.Errorf("%s, phase %v: declared dead after %v by checks that all ran late", tc.name, phase, deadAt)
				}
			} else if deadAt == 0 || deadAt > tc.deadBound {
				t.Errorf("%s, phase %v: declared dead after %v, want within %v", tc.name, phase, deadAt, tc.deadBound)
			}
		}
	}
}

// A starved process (late ticks) suspects less eagerly, within bounds,
// and recovers when its ticks are on time again.
func TestLocalHealthScalesDeadTimeout(t *testing.T) {
	var h localHealth
	hb, dead := 150*time.Millisecond, 600*time.Millisecond
	if got := h.deadTimeout(dead); got != dead {
		t.Fatalf("healthy: %v, want %v", got, dead)
	}
	for range 3 {
		h.observeTick(100*time.Millisecond, hb) // > hb/2 late
	}
	if got := h.deadTimeout(dead); got <= dead {
		t.Fatalf("after late ticks: %v, want more than %v", got, dead)
	}
	for range 100 {
		h.observeTick(time.Second, hb)
	}
	if got, max := h.deadTimeout(dead), dead*3/2; got != max {
		t.Fatalf("saturated: %v, want the cap %v (inside Raft's election timeout with the backstop)", got, max)
	}
	h.observeTick(50*time.Millisecond, hb) // between: no change
	if h.get() != maxLocalHealth {
		t.Fatalf("a tick neither late nor on time changed the score to %d", h.get())
	}
	for range maxLocalHealth {
		h.observeTick(time.Millisecond, hb)
	}
	if got := h.deadTimeout(dead); got != dead {
		t.Fatalf("after on-time ticks: %v, want %v", got, dead)
	}
}

// A lossy direct link (TCP-like: lost writes cost retransmission timeouts)
// is marked degraded and traffic takes the healthy two-hop path; once the
// link is clean again it comes back after the hysteresis hold.
func TestLossyLinkRoutedAroundAndBack(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	c.start("b", nil, "a")
	c.start("c", nil, "a", "b")
	direct := func(hop PeerName) func() bool {
		return func() bool {
			h, ok := a.routes.Load().nextHop("c")
			return ok && h == hop && a.Reachable("b")
		}
	}
	testutil.Eventually(t, waitLong, "a routes to c directly", direct("c"))
	c.net.SetLoss("a", "c", 0.5)
	c.net.SetLoss("c", "a", 0.5)
	start := time.Now()
	testutil.Eventually(t, waitLong, "a routes to c through b", direct("b"))
	t.Logf("lossy link routed around after %v", time.Since(start))
	var link LinkStatus
	for _, l := range a.Status().Links {
		if l.Peer == "c" {
			link = l
		}
	}
	if link.State != LinkDegraded || link.Loss < degradeLoss || len(link.Path) != 2 || link.Path[0] != "b" {
		t.Errorf("status of the lossy link: %+v", link)
	}
	if js, err := json.Marshal(a.Status().Links); err == nil {
		t.Logf("a's links: %s", js)
	}
	c.net.HealAll()
	healed := time.Now()
	testutil.Eventually(t, waitLong, "a routes to c directly again", direct("c"))
	t.Logf("back to direct %v after the heal", time.Since(healed))
}

// A one-way link (c hears a, a never hears c) is closed by both ends and
// routed around: a sees silence, c sees its pings unanswered.
func TestOneWayLinkRoutedAround(t *testing.T) {
	c := newCluster(t)
	fast := func(cfg *Config) {
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.DeadTimeout = 600 * time.Millisecond
	}
	a := c.start("a", fast)
	c.start("b", fast, "a")
	rc := c.start("c", fast, "a", "b")
	via := func(r *Router, dst, hop PeerName) func() bool {
		return func() bool {
			h, ok := r.routes.Load().nextHop(dst)
			return ok && h == hop
		}
	}
	testutil.Eventually(t, waitLong, "a and c linked directly", func() bool {
		return via(a, "c", "c")() && via(rc, "a", "a")() && a.Reachable("b") && rc.Reachable("b")
	})
	c.net.SetOneWay("c", "a", true)
	start := time.Now()
	testutil.Eventually(t, waitLong, "both ends route through b", func() bool { return via(a, "c", "b")() && via(rc, "a", "b")() })
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("one-way link routed around after %v, want well inside Raft's election timeout", d)
	}
	t.Logf("one-way link routed around after %v; c's losses %v", time.Since(start), rc.Status().RecentLosses)
}

// A link whose connections keep failing (here: reset twice, before a
// single ping was missed) comes back degraded when it reconnects: both
// ends keep their traffic on the healthy two-hop path for the hysteresis
// hold instead of routing straight back onto a link that just failed
// again, then return to it once it proved clean. One failure alone (a
// clean cut healed, a false death) does not. Before, a lossy link whose
// connections died within a few pings came back "up" each time, took the
// traffic back and lost it again (the lossy member's writes stalled for
// seconds in TestHostileInProcessLoss).
func TestFailedLinkComesBackDegraded(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	c.start("b", nil, "a")
	rc := c.start("c", nil, "a", "b")
	via := func(r *Router, dst, hop PeerName) bool {
		h, ok := r.routes.Load().nextHop(dst)
		return ok && h == hop
	}
	testutil.Eventually(t, waitLong, "a and c linked directly", func() bool {
		return via(a, "c", "c") && via(rc, "a", "a") && a.Reachable("b") && rc.Reachable("b")
	})
	cutAndHeal := func() {
		t.Helper()
		c.net.Cut("a", "c")
		testutil.Eventually(t, waitLong, "the link gone at both ends", func() bool {
			return a.conns.lookup("c") == nil && rc.conns.lookup("a") == nil
		})
		c.net.Heal("a", "c")
		testutil.Eventually(t, waitLong, "a and c reconnected", func() bool {
			return a.conns.lookup("c") != nil && rc.conns.lookup("a") != nil
		})
	}
	cutAndHeal()
	// Routes follow the reconnection after the route debounce.
	healed := time.Now()
	testutil.Eventually(t, waitLong, "a and c back on the direct link after one failure", func() bool {
		return via(a, "c", "c") && via(rc, "a", "a")
	})
	if d := time.Since(healed); d > minDegradedHold/2 {
		t.Fatalf("after one failure the link was avoided for %v, want it used again at once", d)
	}
	cutAndHeal()
	back := time.Now()
	if !via(a, "c", "b") || !via(rc, "a", "b") {
		hopA, _ := a.routes.Load().nextHop("c")
		hopC, _ := rc.routes.Load().nextHop("a")
		t.Fatalf("right after reconnecting a→c goes through %q and c→a through %q, want both through b (the link just failed)", hopA, hopC)
	}
	testutil.Eventually(t, waitLong, "a and c back on the direct link", func() bool {
		return via(a, "c", "c") && via(rc, "a", "a")
	})
	if d := time.Since(back); d < minDegradedHold/2 {
		t.Errorf("back on the failed link %v after reconnecting, want about the hold (%v)", d, minDegradedHold)
	}
	t.Logf("back on the direct link %v after reconnecting", time.Since(back))
}

// A frame already moved once from a dying connection is moved again when
// the connection it was moved to dies too (up to maxReroutes), and dropped
// as having no route after that.
func TestRerouteAgainUpToTheLimit(t *testing.T) {
	_, a, _, ib := relayTriangle(t)
	testutil.Eventually(t, waitLong, "a routes to b", func() bool {
		_, ok := a.routes.Load().nextHop("b")
		return ok
	})
	frame := func(payload string, reroutes uint8) *frameBuf {
		f := a.newFrame(msgUnicast, a.cfg.DefaultTTL, 20, 0, "b", classInteractive, []byte(payload))
		f.reroutes = reroutes
		return f
	}
	before := a.Status().Counters
	a.reroute(frame("second move", 1)) // already moved once
	testutil.Eventually(t, waitLong, "a frame moved before delivered", func() bool { return ib.has("a:second move") })
	a.reroute(frame("one move too many", maxReroutes))
	after := a.Status().Counters
	if after["rerouted"] != before["rerouted"]+1 || after["drop_no_route"] != before["drop_no_route"]+1 {
		t.Fatalf("rerouted %d → %d, dropped for no route %d → %d; want one of each",
			before["rerouted"], after["rerouted"], before["drop_no_route"], after["drop_no_route"])
	}
}
