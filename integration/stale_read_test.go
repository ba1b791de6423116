package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// No stale reads after a restart: a member killed with SIGKILL right after
// acknowledged puts serves no read, serializable included, from an older
// state once it comes back. The reads start the moment the member accepts
// connections (the client dials the fixed client URL while the process is
// still starting), in a tight loop, until the first acknowledged read plus
// a short window after it.

// staleReadIterations is how many kill/restart rounds the test runs: ≥ 50
// in `make test`, more in `make soak`.
func staleReadIterations() int {
	if soak() {
		return 300
	}
	return 50
}

func TestNoStaleReadAfterRestart(t *testing.T) {
	servers := []string{bins.meshetcd}
	if soak() && bins.etcd != "" {
		servers = append(servers, bins.etcd) // etcd never showed it: the reference
	}
	for _, bin := range servers {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		t.Run(c.kind(), func(t *testing.T) {
			c.WaitHealthy(t)
			runStaleReadRounds(t, c, staleReadIterations())
		})
	}
}

// runStaleReadRounds kills and restarts a member n times (alternately the
// leader and a follower) right after acknowledged puts through it, and
// reads serializably from it from the first moment it accepts connections.
func runStaleReadRounds(t *testing.T, c *Cluster, n int) {
	begin := time.Now()
	var reads, early int
	for round := 0; round < n; round++ {
		l := c.WaitLeader(t)
		victim := l
		if round%2 == 1 {
			victim = follower(c, l)
		}
		// A few acknowledged puts through the victim; the last one is what
		// every later read must see (or something newer).
		cli := c.Client(t, victim)
		var want int64
		for k := 0; k < 3; k++ {
			v := strconv.Itoa(round*10 + k)
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := cli.Put(cctx, "stale/k", v)
			cancel()
			if err != nil {
				t.Fatalf("round %d: put via %s: %v", round, c.Members[victim].Name, err)
			}
			want = resp.Header.Revision
		}
		_ = cli.Close()
		c.Kill(victim)
		m := c.Members[victim]
		m.Proc.start() // no wait: the reads race the start

		rc := c.clientCfg(t, clientv3.Config{DialTimeout: 200 * time.Millisecond}, victim)
		deadline := time.Now().Add(readyTimeout)
		var firstOK time.Time
		for {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := rc.Get(cctx, "stale/k", clientv3.WithSerializable())
			cancel()
			if err == nil {
				reads++
				if firstOK.IsZero() {
					firstOK = time.Now()
					if !strings.Contains(m.Logs.String(), readyLine) {
						early++
					}
				}
				if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision < want {
					got := "nothing"
					if len(resp.Kvs) > 0 {
						got = fmt.Sprintf("%q at mod revision %d", resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
					}
					t.Fatalf("round %d: %s served a stale serializable read after restart: %s, acknowledged put was at revision %d",
						round, m.Name, got, want)
				}
				if time.Since(firstOK) > 100*time.Millisecond {
					break
				}
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %s answered no read within %v: %v", round, m.Name, readyTimeout, err)
			}
		}
		_ = rc.Close()
		m.waitReady()
	}
	t.Logf("%s: %d kill/restart rounds, %d serializable reads after restart, none stale (%d rounds answered before the ready line was read) in %v",
		c.kind(), n, reads, early, time.Since(begin).Round(time.Millisecond))
}
