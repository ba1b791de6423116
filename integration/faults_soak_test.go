package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/meshetcd/meshetcd/embed"
)

// Long randomized runs for `make soak` (MESHETCD_SOAK=1). Each runs for
// MESHETCD_SOAK_DURATION (default 10m) and logs its seed.

func soakDuration(t testing.TB) time.Duration {
	if !soak() {
		t.Skip("soak test: run with MESHETCD_SOAK=1 (make soak)")
	}
	d := 10 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("MESHETCD_SOAK_DURATION")); err == nil {
		d = v
	}
	return d
}

func soakRand(t testing.TB) *rand.Rand {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewSource(seed))
}

// randomConnected returns the links to cut on n nodes so that the
// remaining graph is a random spanning tree plus a few random extra edges:
// always connected, usually far from complete.
func randomConnected(rng *rand.Rand, n int) [][2]int {
	keep := map[[2]int]bool{}
	perm := rng.Perm(n)
	for i := 1; i < n; i++ {
		a, b := perm[i], perm[rng.Intn(i)]
		keep[[2]int{min(a, b), max(a, b)}] = true
	}
	for extra := rng.Intn(2); extra > 0; extra-- {
		a, b := rng.Intn(n), rng.Intn(n)
		if a != b {
			keep[[2]int{min(a, b), max(a, b)}] = true
		}
	}
	var cut [][2]int
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			if !keep[[2]int{a, b}] {
				cut = append(cut, [2]int{a, b})
			}
		}
	}
	return cut
}

// Random connected topologies on 5 processes in namespaces, each held for
// 30 s: the partial-connectivity promises hold in every round.
func TestPartialConnectivitySoak(t *testing.T) {
	dur := soakDuration(t)
	requireNetns(t)
	rng := soakRand(t)
	lab := NewNetLab(t, 5)
	c := StartCluster(t, ClusterOptions{Size: 5, Lab: lab})
	c.WaitHealthy(t)
	var worst connFigures
	end := time.Now().Add(dur)
	for round := 0; time.Now().Before(end); round++ {
		if rng.Intn(2) == 0 {
			makeLeader(t, c, rng.Intn(5))
		}
		mon := startConnMonitor(t, c)
		mon.waitWrites(t)
		mon.reset()
		cut := randomConnected(rng, 5)
		for _, k := range cut {
			lab.Cut(k[0], k[1])
		}
		time.Sleep(30 * time.Second) // the measurement window
		mon.Stop()
		f := mon.figures()
		t.Logf("round %d, leader %s, cut %v: %v", round, c.Members[c.WaitLeader(t)].Name, cut, f)
		assertPartial(t, f)
		worst.StallMax = max(worst.StallMax, f.StallMax)
		worst.LeaderlessMax = max(worst.LeaderlessMax, f.LeaderlessMax)
		worst.LeaderChanges = max(worst.LeaderChanges, f.LeaderChanges)
		lab.HealAll()
		c.WaitHealthy(t)
		if t.Failed() {
			break
		}
	}
	t.Logf("worst over all rounds: stall %v, leaderless %v, leader changes %d", worst.StallMax, worst.LeaderlessMax, worst.LeaderChanges)
}

// Random memnet faults (cut, silent blackhole, minority and majority
// partitions, delays, loss, one-way links, jitter, flapping) on 5 in-process members under the linearizability
// workload.
func TestInProcessFaultsSoak(t *testing.T) {
	dur := soakDuration(t)
	rng := soakRand(t)
	ec, c := startInProcess(t, 5, embed.ClusterOptions{})
	c.WaitHealthy(t)
	w := startWorkload(t, c, 10, 16, 5*time.Second)
	end := time.Now().Add(dur)
	for round := 0; time.Now().Before(end); round++ {
		l := c.WaitLeader(t)
		nw := faults(ec)
		switch rng.Intn(9) {
		case 0:
			cut := randomConnected(rng, 5)
			t.Logf("round %d: cut %v (leader %s)", round, cut, c.Members[l].Name)
			for _, k := range cut {
				ec.Cut(k[0], k[1])
			}
		case 1:
			a, b := rng.Intn(5), rng.Intn(5)
			if a == b {
				b = (a + 1) % 5
			}
			t.Logf("round %d: blackhole %d-%d (leader %s)", round, a, b, c.Members[l].Name)
			nw.Blackhole(ec.HostName(a), ec.HostName(b))
		case 2:
			v := rng.Intn(5)
			if rng.Intn(2) == 0 {
				v = l
			}
			var rest []int
			for i := 0; i < 5; i++ {
				if i != v {
					rest = append(rest, i)
				}
			}
			t.Logf("round %d: isolate %d (leader %s)", round, v, c.Members[l].Name)
			ec.Partition([]int{v}, rest)
		case 3:
			perm := rng.Perm(5)
			t.Logf("round %d: partition %v | %v (leader %s)", round, perm[:2], perm[2:], c.Members[l].Name)
			ec.Partition(perm[:2], perm[2:])
		case 4:
			a, b := rng.Intn(5), rng.Intn(5)
			if a == b {
				b = (a + 1) % 5
			}
			d := time.Duration(rng.Intn(200)) * time.Millisecond
			t.Logf("round %d: delay %v on %d-%d (leader %s)", round, d, a, b, c.Members[l].Name)
			nw.SetDelay(ec.HostName(a), ec.HostName(b), d)
			nw.SetDelay(ec.HostName(b), ec.HostName(a), d)
		case 5, 6, 7, 8:
			a, b := rng.Intn(5), rng.Intn(5)
			if a == b {
				b = (a + 1) % 5
			}
			ha, hb := ec.HostName(a), ec.HostName(b)
			switch k := rng.Intn(4); k {
			case 0:
				p := []float64{0.1, 0.3, 0.5}[rng.Intn(3)]
				t.Logf("round %d: loss %.0f%% on %d-%d (leader %s)", round, 100*p, a, b, c.Members[l].Name)
				nw.SetLoss(ha, hb, p)
				nw.SetLoss(hb, ha, p)
			case 1:
				t.Logf("round %d: one-way %d→%d dropped (leader %s)", round, a, b, c.Members[l].Name)
				nw.SetOneWay(ha, hb, true)
			case 2:
				t.Logf("round %d: delay 50–300ms on %d-%d (leader %s)", round, a, b, c.Members[l].Name)
				for _, d := range [][2]string{{ha, hb}, {hb, ha}} {
					nw.SetDelay(d[0], d[1], 50*time.Millisecond)
					nw.SetJitter(d[0], d[1], 250*time.Millisecond)
				}
			case 3:
				t.Logf("round %d: flap %d-%d every 1–3 s (leader %s)", round, a, b, c.Members[l].Name)
				nw.Flap(ha, hb, time.Second, 3*time.Second)
			}
		}
		w.WaitProgress(t, 100)
		time.Sleep(time.Duration(rng.Intn(5000)) * time.Millisecond) // random fault duration
		ec.HealAll()
		c.WaitHealthy(t)
		w.WaitProgress(t, 50)
	}
	w.Check(t)
}

// A follower behind a ≥ 50 MiB backend catches up by snapshot (the mesh's
// chunked bulk path for meshetcd). BenchmarkSnapshotCatchUp times the same.
func TestSnapshotLargeBackendSoak(t *testing.T) {
	soakDuration(t)
	forEachClusterServer(t, func(t *testing.T, bin string) {
		// With the 5000 entries meshetcd keeps, ≥ 1000 × 64 KiB = 62.5 MiB
		// beyond them.
		db, took := snapshotCatchUp(t, bin, 6000, 64<<10, nil)
		if db < 50<<20 {
			t.Fatalf("backend only %d bytes", db)
		}
		t.Logf("follower caught up on a %d MiB backend in %v", db>>20, took.Round(time.Millisecond))
	})
}

// faultKinds are the faults a soak schedule draws from.
var faultKinds = []string{"kill", "pause", "partition", "linkcut", "loss", "oneway", "delay", "flap"}

// soakSchedules is how many schedules TestFaultSchedulesSoak runs per
// cluster size (MESHETCD_SOAK_SCHEDULES, default 25: ≥ 50 over 3 and 5
// members).
func soakSchedules() int {
	n := 25
	if v, err := strconv.Atoi(os.Getenv("MESHETCD_SOAK_SCHEDULES")); err == nil && v > 0 {
		n = v
	}
	return n
}

// TestFaultSchedulesSoak runs randomized fault schedules on 3 and on 5
// meshetcd processes in namespaces. A schedule is a fresh put/get workload
// (clients bound to every member) through three random faults — kill -9
// and restart, SIGSTOP past the election timeout, a member isolated, random
// link cuts leaving the graph connected, 10/30/50 % loss on a link, a
// one-way link, 50–300 ms delay with jitter, a link flapping every 1–3 s —
// each held 1–4 s and healed, followed by the porcupine linearizability
// check and the no-lost-ack check. Every schedule logs its seed, faults and
// figures; the last line sums them up.
func TestFaultSchedulesSoak(t *testing.T) {
	soakDuration(t) // skips outside make soak
	requireNft(t)
	base := time.Now().UnixNano()
	t.Logf("base seed %d (schedule s of size n uses seed base+100*n+s)", base)
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%dmembers", n), func(t *testing.T) {
			lab := NewNetLab(t, n)
			// pprof: a stuck member's goroutines go into the log (waitHealthyOrDump).
			c := StartCluster(t, ClusterOptions{Size: n, Lab: lab, Args: []string{"--enable-pprof"}})
			c.WaitHealthy(t)
			var ok, unknown, acked int64
			for s := 0; s < soakSchedules(); s++ {
				seed := base + int64(100*n+s)
				res, puts := runFaultSchedule(t, c, lab, seed)
				if t.Failed() {
					t.Fatalf("schedule %d (seed %d) failed", s, seed)
				}
				acked += puts
				if res == porcupine.Ok {
					ok++
				} else {
					unknown++
				}
			}
			t.Logf("%d members: %d schedules, %d linearizable, %d undecided (porcupine timeout), 0 violations, %d acknowledged puts, 0 lost",
				n, soakSchedules(), ok, unknown, acked)
		})
	}
}

// runFaultSchedule runs one schedule (see TestFaultSchedulesSoak) and
// returns porcupine's verdict and the number of acknowledged puts.
func runFaultSchedule(t *testing.T, c *Cluster, lab *NetLab, seed int64) (porcupine.CheckResult, int64) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	n := len(c.Members)
	begin := time.Now()
	w := startWorkloadOn(t, c, fmt.Sprintf("sched%d/", seed), 2*n, 8, 5*time.Second)
	w.WaitProgress(t, 50)
	var did []string
	for step := 0; step < 3; step++ {
		l := c.WaitLeader(t)
		victim := rng.Intn(n)
		if rng.Intn(2) == 0 {
			victim = l
		}
		a, b := rng.Intn(n), rng.Intn(n)
		if a == b {
			b = (a + 1) % n
		}
		hold := time.Second + time.Duration(rng.Int63n(int64(3*time.Second)))
		kind := faultKinds[rng.Intn(len(faultKinds))]
		desc := kind
		switch kind {
		case "kill":
			desc = fmt.Sprintf("kill -9 %s", c.Members[victim].Name)
			c.Kill(victim)
		case "pause":
			desc = fmt.Sprintf("SIGSTOP %s", c.Members[victim].Name)
			c.Pause(victim)
		case "partition":
			desc = fmt.Sprintf("isolate %s", c.Members[victim].Name)
			lab.Isolate(victim)
		case "linkcut":
			cut := randomConnected(rng, n)
			desc = fmt.Sprintf("cut %v", cut)
			for _, k := range cut {
				lab.Cut(k[0], k[1])
			}
		case "loss":
			pct := []int{10, 30, 50}[rng.Intn(3)]
			desc = fmt.Sprintf("loss %d%% m%d–m%d", pct, a, b)
			lab.Loss(a, b, pct)
		case "oneway":
			desc = fmt.Sprintf("one-way m%d→m%d (back dropped)", a, b)
			lab.OneWay(a, b)
		case "delay":
			desc = fmt.Sprintf("delay 50–300ms m%d–m%d", a, b)
			lab.Delay(a, b, 50*time.Millisecond, 300*time.Millisecond)
		case "flap":
			desc = fmt.Sprintf("flap m%d–m%d", a, b)
			lab.Flap(a, b, rng)
		}
		did = append(did, fmt.Sprintf("%s for %v (leader %s)", desc, hold.Round(time.Millisecond), c.Members[l].Name))
		t.Logf("seed %d step %d: %s", seed, step, did[len(did)-1])
		time.Sleep(hold) // the fault's duration, drawn from the seed
		switch kind {
		case "kill":
			c.Restart(victim)
		case "pause":
			c.Resume(victim)
		default:
			lab.HealAll()
		}
		waitHealthyOrDump(t, c, lab)
		w.WaitProgress(t, 50)
	}
	res := w.Check(t)
	t.Logf("schedule seed %d, %d members, %v: [%s]; %d puts acknowledged, %d unknown, %d gets; porcupine %v; longest op %v",
		seed, n, time.Since(begin).Round(time.Millisecond), strings.Join(did, "; "),
		w.putsOK.Load(), w.putsUnk.Load(), w.getsOK.Load(), res, time.Duration(w.maxLat.Load()).Round(time.Millisecond))
	return res, w.putsOK.Load()
}

// waitHealthyOrDump waits for a healthy cluster; when that takes more than
// 30 s it logs every member's /mesh/status (what the routers believe) and
// goroutines (--enable-pprof) before
// waiting the rest of the usual bound, so a stuck cluster leaves evidence.
func waitHealthyOrDump(t *testing.T, c *Cluster, lab *NetLab) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c.healthy() == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return lab.dialByIP(ctx, addr) },
	}}
	for _, m := range c.Members {
		if !m.running() {
			continue
		}
		resp, err := hc.Get(m.ClientURL + "/mesh/status")
		if err != nil {
			t.Logf("not healthy after 30 s; /mesh/status of %s: %v", m.Name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		t.Logf("not healthy after 30 s (%v); /mesh/status of %s: %s", c.healthy(), m.Name, body)
		if resp, err = hc.Get(m.ClientURL + "/debug/pprof/goroutine?debug=2"); err == nil {
			body, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			t.Logf("goroutines of %s:\n%s", m.Name, body)
		}
	}
	c.WaitHealthy(t)
}
