package integration

import (
	"math/rand"
	"testing"
	"time"
)

// Hostile link shapes (netns_shapes_test.go) on the leader's link to one
// follower of a 3-member cluster in namespaces, with writers bound to every
// member: the follower still has a clean two-hop path through the third
// member. Promises asserted for meshetcd (etcd 3.7.3's figures are logged
// beside them with MESHETCD_COMPARE_ETCD=1):
//   - no client bound to a member sees a write stall of 2 s or more;
//   - no member is leaderless for more than 1.5 s;
//   - leadership changes at most once;
//   - writes during the fault ≥ 0.9 × writes in an equally long connected
//     window just before (asserted in make soak's long windows).

const (
	shapeLeaderlessBound = 1500 * time.Millisecond
	shapeThroughputRatio = 0.9
)

// shapeWindow is how long the connected and the fault windows last: a few
// seconds in `make test`, a minute in `make soak`.
func shapeWindow() time.Duration {
	if soak() {
		return time.Minute
	}
	return 5 * time.Second
}

// linkShape is one hostile shape applied to the link 0–2 (0 the leader).
type linkShape struct {
	name  string
	apply func(l *NetLab, rng *rand.Rand)
}

var linkShapesUnderTest = []linkShape{
	{"loss10", func(l *NetLab, _ *rand.Rand) { l.Loss(0, 2, 10) }},
	{"loss30", func(l *NetLab, _ *rand.Rand) { l.Loss(0, 2, 30) }},
	{"loss50", func(l *NetLab, _ *rand.Rand) { l.Loss(0, 2, 50) }},
	{"oneway", func(l *NetLab, _ *rand.Rand) { l.OneWay(0, 2) }}, // m0→m2 delivered, m2→m0 dropped
	{"delay50-300ms", func(l *NetLab, _ *rand.Rand) { l.Delay(0, 2, 50*time.Millisecond, 300*time.Millisecond) }},
	{"flap1-3s", func(l *NetLab, rng *rand.Rand) { l.Flap(0, 2, rng) }},
	{"slow32KBps", func(l *NetLab, _ *rand.Rand) { l.Slow(0, 2, 32) }},
}

type shapeFigures struct {
	connected, fault connFigures
}

func (f shapeFigures) ratio() float64 {
	sum := func(ws []int) (n int) {
		for _, w := range ws {
			n += w
		}
		return n
	}
	c := sum(f.connected.Writes)
	if c == 0 {
		return 0
	}
	return float64(sum(f.fault.Writes)) / float64(c)
}

// runShape starts n members in namespaces with member 0 the leader and
// measures the shape (measureShape).
func runShape(t *testing.T, bin string, n int, s linkShape, rng *rand.Rand) shapeFigures {
	lab := NewNetLab(t, n)
	c := StartCluster(t, ClusterOptions{Bin: bin, Size: n, Lab: lab})
	return measureShape(t, c, s.name, func() { s.apply(lab, rng) }, lab.HealAll)
}

// measureShape makes member 0 the leader, measures a connected window,
// applies the fault, measures the fault window, heals and waits until the
// cluster is healthy again.
func measureShape(t *testing.T, c *Cluster, name string, apply, heal func()) shapeFigures {
	c.WaitHealthy(t)
	makeLeader(t, c, 0)
	c.WaitHealthy(t)
	mon := startConnMonitor(t, c)
	mon.waitWrites(t)
	mon.reset()
	time.Sleep(shapeWindow()) // connected window (a measurement, not an assertion)
	var f shapeFigures
	f.connected = mon.figures()
	mon.reset()
	apply()
	time.Sleep(shapeWindow()) // fault window
	mon.Stop()
	f.fault = mon.figures()
	t.Logf("%s, %s on m0–m2 for %v: %v; writes %.2f× the connected window (%v)",
		c.kind(), name, shapeWindow(), f.fault, f.ratio(), f.connected.Writes)
	heal()
	c.WaitHealthy(t)
	return f
}

func assertShape(t *testing.T, f shapeFigures) {
	t.Helper()
	for i, n := range f.fault.Writes {
		if n == 0 {
			t.Errorf("member m%d took no write during the fault", i)
		}
	}
	if f.fault.StallMax >= stallBound {
		t.Errorf("a client bound to one member saw a write stall of %v (bound %v)", f.fault.StallMax, stallBound)
	}
	if f.fault.LeaderlessMax > shapeLeaderlessBound {
		t.Errorf("a member was leaderless for %v (bound %v)", f.fault.LeaderlessMax, shapeLeaderlessBound)
	}
	if f.fault.LeaderChanges > 1 {
		t.Errorf("leadership changed %d times (at most once)", f.fault.LeaderChanges)
	}
	// 5 s windows on a shared 2-core machine vary by more than 10 % with
	// no fault at all (measured 0.46–1.89× across shapes in one loaded
	// run), so the throughput promise is asserted over soak's 1-minute
	// windows; make test logs the ratio.
	if r := f.ratio(); r < shapeThroughputRatio && soak() {
		t.Errorf("writes during the fault were %.2f× the connected window (want ≥ %.1f×)", r, shapeThroughputRatio)
	}
}

func TestPartialLinkShapes(t *testing.T) {
	requireNft(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	for _, s := range linkShapesUnderTest {
		t.Run(s.name, func(t *testing.T) {
			partialServers(t, func(t *testing.T, bin string, assert bool) {
				f := runShape(t, bin, 3, s, rand.New(rand.NewSource(seed)))
				if assert {
					assertShape(t, f)
				}
			})
		})
	}
}
