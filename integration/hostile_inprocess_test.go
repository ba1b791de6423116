package integration

import (
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/embed"
	"github.com/meshetcd/meshetcd/embed/embedtest"
)

// Hostile-link shapes on the in-memory network (mesh/memnet), three
// in-process members with the leader on m0 and writers bound to every
// member, the fault on the link m0–m2 (the leader's link to a follower):
// no member stalls writes for 2 s or more, none is leaderless for more
// than 1.5 s, leadership changes at most once, and throughput stays at
// ≥ 0.9× the connected phase. Each fault lasts hostileWindow (a few
// seconds; MESHETCD_SOAK=1: two minutes).

const hostileLeaderlessBound = 1500 * time.Millisecond

func hostileWindow() time.Duration {
	if soak() {
		return 2 * time.Minute
	}
	return 5 * time.Second
}

// runHostile measures a connected phase and then a faulted phase of the
// same length and checks the promises; apply sets the fault.
func runHostile(t *testing.T, apply func(nw embedtest.Network, a, b string)) {
	burnCPUIfAsked(t)
	ec, c := startInProcess(t, 3, embed.ClusterOptions{})
	t.Cleanup(ec.HealAll) // stops a flapping link even if the test fails early
	c.WaitHealthy(t)
	makeLeader(t, c, 0)
	c.WaitHealthy(t)
	mon := startConnMonitor(t, c)
	mon.waitWrites(t)
	mon.reset()
	time.Sleep(hostileWindow())
	connected := mon.figures()
	mon.reset()
	apply(faults(ec), ec.HostName(0), ec.HostName(2))
	time.Sleep(hostileWindow())
	mon.Stop()
	f := mon.figures()
	for _, i := range []int{0, 2} { // the ends of the faulted link
		for _, l := range ec.Members()[i].MeshStatus().Links {
			t.Logf("m%d link to %s: state %s, rtt %s, loss %.2f, path %v, links lost %d",
				i, l.Peer, l.State, l.RTT, l.Loss, l.Path, l.LinksLost)
		}
	}
	ec.HealAll()
	sum := func(f connFigures) (n int) {
		for _, w := range f.Writes {
			n += w
		}
		return n
	}
	ratio := float64(sum(f)) / float64(max(1, sum(connected)))
	t.Logf("connected (%v): %v", hostileWindow(), connected)
	t.Logf("fault (%v): %v; throughput %.2f× connected", hostileWindow(), f, ratio)
	assertPartial(t, f)
	if f.LeaderlessMax > hostileLeaderlessBound {
		t.Errorf("a member was leaderless for %v (bound %v)", f.LeaderlessMax, hostileLeaderlessBound)
	}
	// Throughput over a few seconds on a shared 2-core machine varies far
	// more than 10 % from one window to the next whatever the network
	// does, so the ≥ 0.9× promise is asserted over the long soak windows
	// and only logged in the short ones.
	if ratio < 0.9 && soak() {
		t.Errorf("throughput in the fault was %.2f× the connected phase (want ≥ 0.9×)", ratio)
	}
	c.WaitHealthy(t)
}

func TestHostileInProcessLoss(t *testing.T) {
	for _, p := range []struct {
		name string
		p    float64
	}{{"10pct", 0.1}, {"30pct", 0.3}, {"50pct", 0.5}} {
		t.Run(p.name, func(t *testing.T) {
			runHostile(t, func(nw embedtest.Network, a, b string) {
				nw.SetLoss(a, b, p.p)
				nw.SetLoss(b, a, p.p)
			})
		})
	}
}

// A→C delivered, C→A dropped (C can hear the leader but not answer), and
// the reverse.
func TestHostileInProcessOneWay(t *testing.T) {
	t.Run("follower-cannot-send", func(t *testing.T) {
		runHostile(t, func(nw embedtest.Network, a, b string) { nw.SetOneWay(b, a, true) })
	})
	t.Run("leader-cannot-send", func(t *testing.T) {
		runHostile(t, func(nw embedtest.Network, a, b string) { nw.SetOneWay(a, b, true) })
	})
}

func TestHostileInProcessDelayJitter(t *testing.T) {
	runHostile(t, func(nw embedtest.Network, a, b string) {
		for _, d := range [][2]string{{a, b}, {b, a}} {
			nw.SetDelay(d[0], d[1], 50*time.Millisecond)
			nw.SetJitter(d[0], d[1], 250*time.Millisecond)
		}
	})
}

func TestHostileInProcessFlapping(t *testing.T) {
	runHostile(t, func(nw embedtest.Network, a, b string) { nw.Flap(a, b, time.Second, 3*time.Second) })
}

func TestHostileInProcessSlowLink(t *testing.T) {
	runHostile(t, func(nw embedtest.Network, a, b string) {
		nw.SetBandwidth(a, b, 32<<10) // 32 KiB/s
		nw.SetBandwidth(b, a, 32<<10)
	})
}
