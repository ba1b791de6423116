package integration

import (
	"fmt"
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
//   - writes during the fault ≥ 0.9 × writes in equally long connected
//     windows (asserted in make soak, over alternating windows).

const (
	shapeLeaderlessBound = 1500 * time.Millisecond
	shapeThroughputRatio = 0.9
)

// shapeWindow is how long each connected and each fault window lasts: a
// few seconds in `make test`, 20 s in `make soak` (three rounds: a minute
// of each).
func shapeWindow() time.Duration {
	if soak() {
		return 20 * time.Second
	}
	return 5 * time.Second
}

// shapeRounds is how many connected/fault window pairs a shape is measured
// over. Alternating them cancels what a single pair takes for the
// network's doing: the drift of a shared machine's load (another build
// starting mid-run) between the connected and the fault window.
func shapeRounds() int {
	if soak() {
		return 3
	}
	return 1
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

// memberRatios is each member's writes in the fault over its writes in
// the connected windows: which member's clients paid for the fault.
func (f shapeFigures) memberRatios() []string {
	var out []string
	for i := range f.fault.Writes {
		if i < len(f.connected.Writes) && f.connected.Writes[i] > 0 {
			out = append(out, fmt.Sprintf("m%d %.2f×", i, float64(f.fault.Writes[i])/float64(f.connected.Writes[i])))
		}
	}
	return out
}

// runShape starts n members in namespaces with member 0 the leader and
// measures the shape (measureShape).
func runShape(t *testing.T, bin string, n int, s linkShape, rng *rand.Rand) shapeFigures {
	lab := NewNetLab(t, n)
	c := StartCluster(t, ClusterOptions{Bin: bin, Size: n, Lab: lab})
	return measureShape(t, c, s.name, func() { s.apply(lab, rng) }, lab.HealAll)
}

// measureShape measures shapeRounds rounds, each: make member 0 the
// leader, measure a connected window, apply the fault, measure the fault
// window, heal and wait until the cluster is healthy again. The figures
// are summed over the rounds (maxima stay maxima).
func measureShape(t *testing.T, c *Cluster, name string, apply, heal func()) shapeFigures {
	var f shapeFigures
	for round := 1; round <= shapeRounds(); round++ {
		c.WaitHealthy(t)
		makeLeader(t, c, 0)
		c.WaitHealthy(t)
		mon := startConnMonitor(t, c)
		mon.waitWrites(t)
		mon.reset()
		time.Sleep(shapeWindow()) // connected window (a measurement, not an assertion)
		var r shapeFigures
		r.connected = mon.figures()
		mon.reset()
		apply()
		time.Sleep(shapeWindow()) // fault window
		mon.Stop()
		r.fault = mon.figures()
		t.Logf("%s, %s on m0–m2 for %v (round %d/%d): %v; writes %.2f× the connected window (%v; per member %v)",
			c.kind(), name, shapeWindow(), round, shapeRounds(), r.fault, r.ratio(), r.connected.Writes, r.memberRatios())
		f.connected, f.fault = f.connected.plus(r.connected), f.fault.plus(r.fault)
		heal()
	}
	c.WaitHealthy(t)
	if shapeRounds() > 1 {
		t.Logf("%s, %s over %d rounds: %v; writes %.2f× the connected windows (%v; per member %v)",
			c.kind(), name, shapeRounds(), f.fault, f.ratio(), f.connected.Writes, f.memberRatios())
	}
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
	// run), so the throughput promise is asserted over soak's alternating
	// windows (a minute of each); make test logs the ratio.
	if r := f.ratio(); r < shapeThroughputRatio && soak() {
		t.Errorf("writes during the fault were %.2f× the connected windows (want ≥ %.1f×)", r, shapeThroughputRatio)
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
