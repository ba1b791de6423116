package integration

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/embed"
	"github.com/meshetcd/meshetcd/embed/embedtest"
	"github.com/meshetcd/meshetcd/internal/testutil"
)

// In-process clusters (embed.StartCluster) on the in-memory network
// mesh/memnet, with its fault injection: the partial-connectivity promises
// and the linearizability check without root or network namespaces.

// startInProcess starts n members in this process and wraps them in the
// harness's Cluster (clients, leader lookup, status polling).
func startInProcess(t testing.TB, n int, opts embed.ClusterOptions) (*embed.Cluster, *Cluster) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Network == nil {
		opts.Network = embedtest.NewNetwork()
	}
	sctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	ec, err := embed.StartCluster(sctx, n, opts)
	if err != nil {
		t.Fatalf("embed.StartCluster(%d): %v", n, err)
	}
	t.Cleanup(func() {
		if err := ec.Close(); err != nil {
			t.Errorf("closing in-process cluster: %v", err)
		}
	})
	c := &Cluster{t: t, dir: t.TempDir()}
	for i, m := range ec.Members() {
		c.Members = append(c.Members, &Member{c: c, Idx: i, Name: m.Name(), InProc: true,
			ClientURL: m.ClientURLs()[0].String(), PeerURL: m.PeerURLs()[0].String()})
	}
	c.WaitLeader(t)
	return ec, c
}

// faults is an in-process cluster's in-memory network, for faults beyond
// Cut/Heal/Partition (blackholes).
func faults(ec *embed.Cluster) embedtest.Network { return ec.Network().(embedtest.Network) }

func runPartialInProcess(t *testing.T, n int, cut func(ec *embed.Cluster)) connFigures {
	return runPartialInProcessLeader(t, n, 0, cut)
}

func runPartialInProcessLeader(t *testing.T, n, leader int, cut func(ec *embed.Cluster)) connFigures {
	ec, c := startInProcess(t, n, embed.ClusterOptions{})
	c.WaitHealthy(t)
	makeLeader(t, c, leader)
	c.WaitHealthy(t)
	mon := startConnMonitor(t, c)
	mon.waitWrites(t)
	mon.reset()
	cut(ec)
	time.Sleep(cutWindow()) // the measurement window, not an assertion
	mon.Stop()
	f := mon.figures()
	t.Logf("in-process (memnet), %d members, during the cut (%v): %v", n, cutWindow(), f)
	if f.StallMax > stallBound || f.LeaderlessMax > leaderlessBound || f.LeaderChanges > 1 {
		logMeshLinks(t, ec) // what each member's mesh made of the cut, before healing
	}
	ec.HealAll()
	c.WaitHealthy(t)
	return f
}

// logMeshLinks logs every member's view of its links and mesh counters.
func logMeshLinks(t *testing.T, ec *embed.Cluster) {
	for i, m := range ec.Members() {
		st := m.MeshStatus()
		for _, l := range st.Links {
			t.Logf("m%d link to %s: state %s, rtt %s, loss %.2f, path %v, links lost %d",
				i, l.Peer, l.State, l.RTT, l.Loss, l.Path, l.LinksLost)
		}
		t.Logf("m%d mesh: local health %d, counters %v, recent losses %v", i, st.LocalHealth, st.Counters, st.RecentLosses)
	}
}

// A–B–C with A–C cut (a firewall: connections reset) and A the leader.
func TestPartialInProcessTriangleCut(t *testing.T) {
	assertPartial(t, runPartialInProcess(t, 3, func(ec *embed.Cluster) { ec.Cut(0, 2) }))
}

// The same with a silent link (memnet blackhole: data accepted, never
// delivered): the mesh must detect it and route around, not black-hole.
func TestPartialInProcessTriangleBlackhole(t *testing.T) {
	burnCPUIfAsked(t)
	var reroutes []func() time.Duration
	assertPartial(t, runPartialInProcess(t, 3, func(ec *embed.Cluster) {
		faults(ec).Blackhole(ec.HostName(0), ec.HostName(2))
		reroutes = append(reroutes, watchReroute(t, ec, 2, 0), watchReroute(t, ec, 0, 2))
	}))
	// The mesh's own figure, apart from Raft and the clients: how long each
	// end kept its traffic on the dead direct link.
	t.Logf("mesh rerouted m2→m0 after %v, m0→m2 after %v", reroutes[0](), reroutes[1]())
}

// watchReroute polls member from's mesh status from now until its traffic
// to member to leaves the direct link (or 10 s pass); the returned func
// waits and reports how long that took (-1 if it never did).
func watchReroute(t *testing.T, ec *embed.Cluster, from, to int) func() time.Duration {
	start := time.Now()
	done := make(chan time.Duration, 1)
	prefix := ec.HostName(to) + ":"
	go func() {
		for time.Since(start) < 10*time.Second {
			for _, l := range ec.Members()[from].MeshStatus().Links {
				if strings.HasPrefix(string(l.Peer), prefix) && l.Hops > 1 {
					done <- time.Since(start)
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		done <- -1
	}()
	var d time.Duration
	var once sync.Once
	wait := func() time.Duration { once.Do(func() { d = <-done }); return d }
	t.Cleanup(func() { wait() })
	return wait
}

// burnCPUIfAsked saturates every core for the test with MESHETCD_CPU_BURN=1
// (make stress-blackhole): failure detection must not be fooled by it.
func burnCPUIfAsked(t *testing.T) {
	if os.Getenv("MESHETCD_CPU_BURN") == "1" {
		testutil.BurnCPU(t)
	}
}

// Five members in a line with the leader at one end.
func TestPartialInProcessLineOfFive(t *testing.T) {
	assertPartial(t, runPartialInProcess(t, 5, func(ec *embed.Cluster) {
		for a := 0; a < 5; a++ {
			for b := a + 2; b < 5; b++ {
				ec.Cut(a, b)
			}
		}
	}))
}

// A line 0–3–4–1–2 with the leader (1) in the middle (see
// TestPartialLineOfFiveLeaderInMiddle).
func TestPartialInProcessLineLeaderInMiddle(t *testing.T) {
	keep := map[[2]int]bool{{0, 3}: true, {3, 4}: true, {1, 4}: true, {1, 2}: true}
	assertPartial(t, runPartialInProcessLeader(t, 5, 1, func(ec *embed.Cluster) {
		for a := 0; a < 5; a++ {
			for b := a + 1; b < 5; b++ {
				if !keep[[2]int{a, b}] {
					ec.Cut(a, b)
				}
			}
		}
	}))
}

// A line 4–0–3–1–2 with the leader (4) at one end: the shape of the line
// of five, other member numbering (found by TestPartialConnectivitySoak:
// m1 and m2 leaderless 2.5–2.7 s, write stalls of 4.1 s).
func TestPartialInProcessLineLeaderAtEndRenumbered(t *testing.T) {
	keep := map[[2]int]bool{{0, 4}: true, {0, 3}: true, {1, 3}: true, {1, 2}: true}
	assertPartial(t, runPartialInProcessLeader(t, 5, 4, func(ec *embed.Cluster) {
		for a := 0; a < 5; a++ {
			for b := a + 1; b < 5; b++ {
				if !keep[[2]int{a, b}] {
					ec.Cut(a, b)
				}
			}
		}
	}))
}

// A new member that reaches only one member joins (embed Join through a
// member whose links to the others are the only path) and serves.
func TestPartialInProcessJoinThroughOneMember(t *testing.T) {
	ec, c := startInProcess(t, 3, embed.ClusterOptions{})
	c.WaitHealthy(t)
	cfg, err := ec.NewMemberConfig()
	if err != nil {
		t.Fatal(err)
	}
	// The new member's host (index 3) can reach only member 2.
	ec.Network().Cut(ec.HostName(3), ec.HostName(0))
	ec.Network().Cut(ec.HostName(3), ec.HostName(1))
	cfg.Join = true
	cfg.Peers = []string{ec.Members()[2].PeerAddr()}
	sctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	m, err := ec.StartMember(sctx, cfg)
	if err != nil {
		t.Fatalf("join through one member: %v", err)
	}
	c.Members = append(c.Members, &Member{c: c, Idx: 3, Name: m.Name(), InProc: true,
		ClientURL: m.ClientURLs()[0].String(), PeerURL: m.PeerURLs()[0].String()})
	waitVoters(t, c, 4)
	if _, err := c.Client(t, 3).Put(ctx(t), "joined", "1"); err != nil {
		t.Fatalf("put via the joined member: %v", err)
	}
	c.WaitHealthy(t)
}

// Partitions on memnet under the linearizability workload: the leader cut
// off from the majority, then a follower, then a link cut.
func TestFaultsInProcessPartitionLinearizable(t *testing.T) {
	ec, c := startInProcess(t, 3, embed.ClusterOptions{})
	c.WaitHealthy(t)
	w := startWorkload(t, c, 6, 8, 5*time.Second)
	w.WaitProgress(t, 200)

	l := c.WaitLeader(t)
	var rest []int
	for i := range c.Members {
		if i != l {
			rest = append(rest, i)
		}
	}
	ec.Partition([]int{l}, rest)
	nl, took := waitNewLeader(t, c, l)
	t.Logf("leader %s partitioned away: new leader %s after %v", c.Members[l].Name, c.Members[nl].Name, took.Round(time.Millisecond))
	if took > electionBound {
		t.Errorf("new leader after %v, want < %v", took, electionBound)
	}
	w.WaitProgress(t, 200)
	time.Sleep(2 * time.Second) // keep the partition a while (fault duration, not an assertion)
	ec.HealAll()
	c.WaitHealthy(t)

	f := follower(c, c.WaitLeader(t))
	var others []int
	for i := range c.Members {
		if i != f {
			others = append(others, i)
		}
	}
	ec.Partition([]int{f}, others)
	w.WaitProgress(t, 200)
	ec.HealAll()
	c.WaitHealthy(t)

	l = c.WaitLeader(t)
	ec.Cut(l, follower(c, l))
	w.WaitProgress(t, 200)
	ec.HealAll()
	c.WaitHealthy(t)
	w.WaitProgress(t, 100)
	w.Check(t)
}
