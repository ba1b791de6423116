package integration

import (
	"os"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/embed"
	"github.com/meshetcd/meshetcd/internal/testutil"
)

// TestFalseLinkDeathsUnderCPULoad measures false link deaths: three
// in-process members on the in-memory network with no fault at all, a
// writer bound to every member, and every core kept busy (a spinning
// goroutine per core, so all members are starved alike), for
// MESHETCD_FALSE_DEATHS_DURATION (make false-deaths: 10m). Every mesh link
// lost in that time is a false death (the failure detector fooled by a
// busy CPU); the goal is 0. It logs the figures per member.
func TestFalseLinkDeathsUnderCPULoad(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("MESHETCD_FALSE_DEATHS_DURATION"))
	if err != nil || d <= 0 {
		t.Skip("set MESHETCD_FALSE_DEATHS_DURATION (make false-deaths) to measure false link deaths under full CPU load")
	}
	ec, c := startInProcess(t, 3, embed.ClusterOptions{})
	c.WaitHealthy(t)
	mon := startConnMonitor(t, c)
	mon.waitWrites(t)
	base := meshLosses(ec)
	testutil.BurnCPU(t)
	mon.reset()
	start := time.Now()
	for time.Since(start) < d {
		time.Sleep(min(10*time.Second, d-time.Since(start)))
		t.Logf("%v under full CPU load: links lost per member %v (before the load %v)", time.Since(start).Round(time.Second), meshLosses(ec), base)
	}
	mon.Stop()
	after := meshLosses(ec)
	lost := uint64(0)
	for i := range after {
		lost += after[i] - base[i]
	}
	var health []int
	for _, m := range ec.Members() {
		health = append(health, m.MeshStatus().LocalHealth)
	}
	t.Logf("false link deaths in %v under full CPU load: %d (per member %v); write figures %v; local health now %v",
		d, lost, after, mon.figures(), health)
	if lost != 0 {
		for _, m := range ec.Members() {
			t.Logf("%s recent losses: %v", m.Name(), m.MeshStatus().RecentLosses)
		}
		t.Errorf("%d false link deaths under full CPU load (goal 0)", lost)
	}
}

// meshLosses returns each member's count of lost mesh connections.
func meshLosses(ec *embed.Cluster) []uint64 {
	var out []uint64
	for _, m := range ec.Members() {
		out = append(out, m.MeshStatus().Counters["connections_lost"])
	}
	return out
}
