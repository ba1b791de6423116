package integration

import (
	"strings"
	"testing"
	"time"
)

// TestDiscoveryTimeoutNamesFoundAndMissing: two of three members started
// with --discovery-size 3 give up after --discovery-timeout, exit 1, and
// say whom they found and how many are missing.
func TestDiscoveryTimeoutNamesFoundAndMissing(t *testing.T) {
	c := &Cluster{t: t, Bin: bins.meshetcd, Opts: ClusterOptions{Token: "mtest-discovery-timeout"}, dir: t.TempDir()}
	for i := 0; i < 2; i++ {
		c.Members = append(c.Members, c.newMember(i))
	}
	start := time.Now()
	for i, m := range c.Members {
		seed := strings.TrimPrefix(c.Members[1-i].PeerURL, "http://")
		m.Proc = c.procFor(m, append(c.memberArgs(m, "", ""), "--discovery-size", "3", "--peers", seed, "--discovery-timeout", "4s"))
		m.Proc.start()
	}
	for _, m := range c.Members {
		if code := m.Wait(exitTimeout); code != 1 {
			t.Errorf("%s: exit %d, want 1", m.Name, code)
		}
		logs := m.Logs.String()
		for _, want := range []string{"discovery did not form a cluster within 4s", "found 2 of 3 members", "m0 (", "m1 (", "missing 1"} {
			if !strings.Contains(logs, want) {
				t.Errorf("%s: the exit error does not say %q:\n%s", m.Name, want, tail(logs, 5))
			}
		}
	}
	if took := time.Since(start); took < 4*time.Second {
		t.Errorf("members gave up after %v, before --discovery-timeout 4s", took)
	}
}
