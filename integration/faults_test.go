package integration

import (
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Faults under a concurrent put/get workload whose history must be
// linearizable, with no acknowledged write lost. Every test runs against
// meshetcd and (when bin/etcd exists) etcd 3.7.3.

// electionBound is how long a new leader may take after the old one
// vanished: etcd's default election timeout is 1 s, randomized up to 2 s;
// the rest is slack for a loaded 2-core machine.
const electionBound = 15 * time.Second

// waitNewLeader waits until a majority agrees on a leader other than old
// and returns it and how long it took.
func waitNewLeader(t testing.TB, c *Cluster, old int) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < readyTimeout {
		if l := c.Leader(); l >= 0 && l != old {
			return l, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no new leader (old %s) within %v", c.Members[old].Name, readyTimeout)
	return -1, 0
}

func follower(c *Cluster, leader int) int { return (leader + 1) % len(c.Members) }

func TestFaultsKillPauseLinearizable(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)
		w := startWorkload(t, c, 6, 8, 5*time.Second)
		w.WaitProgress(t, 200)

		// SIGKILL the leader: a new one takes over, writes go on; restart.
		l := c.WaitLeader(t)
		c.Kill(l)
		nl, took := waitNewLeader(t, c, l)
		t.Logf("kill -9 leader %s: new leader %s after %v", c.Members[l].Name, c.Members[nl].Name, took.Round(time.Millisecond))
		if took > electionBound {
			t.Errorf("new leader after %v, want < %v", took, electionBound)
		}
		w.WaitProgress(t, 100)
		c.Restart(l)
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)

		// SIGKILL a follower; the rest keep serving; restart.
		l = c.WaitLeader(t)
		f := follower(c, l)
		c.Kill(f)
		w.WaitProgress(t, 200)
		c.Restart(f)
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)

		// SIGSTOP the leader well past the election timeout, then SIGCONT.
		l = c.WaitLeader(t)
		c.Pause(l)
		nl, took = waitNewLeader(t, c, l)
		t.Logf("SIGSTOP leader %s: new leader %s after %v", c.Members[l].Name, c.Members[nl].Name, took.Round(time.Millisecond))
		w.WaitProgress(t, 100)
		c.Resume(l)
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)

		// SIGSTOP a follower for 3 s.
		f = follower(c, c.WaitLeader(t))
		c.Pause(f)
		w.WaitProgress(t, 100)
		time.Sleep(3 * time.Second) // a pause long enough to miss elections; not an assertion
		c.Resume(f)
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)

		w.Check(t)
	})
}

// Partitions need network namespaces: a minority (one follower isolated)
// and a majority partition (the leader isolated: the majority elects a new
// leader, the old one cannot commit).
func TestFaultsPartitionLinearizable(t *testing.T) {
	requireNetns(t)
	forEachClusterServer(t, func(t *testing.T, bin string) {
		lab := NewNetLab(t, 3)
		c := StartCluster(t, ClusterOptions{Bin: bin, Lab: lab})
		c.WaitHealthy(t)
		w := startWorkload(t, c, 6, 8, 5*time.Second)
		w.WaitProgress(t, 200)

		l := c.WaitLeader(t)
		f := follower(c, l)
		lab.Isolate(f)
		t.Logf("isolated follower %s", c.Members[f].Name)
		w.WaitProgress(t, 200)
		lab.HealAll()
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)

		l = c.WaitLeader(t)
		lab.Isolate(l)
		nl, took := waitNewLeader(t, c, l)
		t.Logf("isolated leader %s: new leader %s after %v", c.Members[l].Name, c.Members[nl].Name, took.Round(time.Millisecond))
		if took > electionBound {
			t.Errorf("new leader after %v, want < %v", took, electionBound)
		}
		w.WaitProgress(t, 200)
		time.Sleep(2 * time.Second) // keep the partition a while (fault duration, not an assertion)
		lab.HealAll()
		c.WaitHealthy(t)
		w.WaitProgress(t, 100)
		w.Check(t)
	})
}

// A follower that is down while the leader snapshots and compacts its log
// past the follower's index catches up by snapshot and then agrees with
// the others. --snapshot-catchup-entries is honoured by etcd and ignored by
// meshetcd (which keeps 5000 entries), so enough entries are written to
// pass either.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin, Args: []string{"--snapshot-count", "500", "--snapshot-catchup-entries", "100"}})
		c.WaitHealthy(t)
		l := c.WaitLeader(t)
		f := follower(c, l)
		cli := c.Client(t, l)
		if _, err := cli.Put(ctx(t), "before", "1"); err != nil {
			t.Fatal(err)
		}
		c.Kill(f)
		n := 6000
		if soak() {
			n = 20000
		}
		begin := time.Now()
		putMany(t, cli, "snap/", n, 16, 256)
		t.Logf("%d puts with %s down in %v", n, c.Members[f].Name, time.Since(begin).Round(time.Millisecond))
		resp, err := cli.Get(ctx(t), "before")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(ctx(t), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact: %v", err)
		}
		if _, err := cli.Put(ctx(t), "after", "1"); err != nil {
			t.Fatal(err)
		}
		begin = time.Now()
		c.Restart(f)
		c.WaitHealthy(t)
		// The restarted follower serves the newest write locally.
		fc := c.statusClient(f)
		for {
			r, err := fc.Get(ctx(t), "after", clientv3.WithSerializable())
			if err == nil && len(r.Kvs) == 1 {
				break
			}
			if time.Since(begin) > readyTimeout {
				t.Fatalf("follower did not catch up within %v: %v %v", readyTimeout, r, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("follower %s caught up %v after restart", c.Members[f].Name, time.Since(begin).Round(time.Millisecond))
		r, err := fc.Get(ctx(t), "snap/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err != nil || r.Count != int64(n) {
			t.Fatalf("follower has %v keys under snap/ (want %d): %v", r, n, err)
		}
		c.checkHashes(t)
		var snapLines []string
		for _, e := range c.Members[f].Logs.entries() {
			if m := e.msg(); strings.Contains(strings.ToLower(m), "snapshot") && !slices.Contains(snapLines, m) {
				snapLines = append(snapLines, m)
			}
		}
		t.Logf("follower log lines about snapshots: %q", snapLines)
		// Both servers log raft's own message when a follower installs a
		// snapshot from the leader (rather than replaying the log).
		if !slices.ContainsFunc(snapLines, func(m string) bool { return strings.Contains(m, "restored snapshot") }) {
			t.Errorf("follower %s caught up without a raft snapshot (no \"restored snapshot\" log line)", c.Members[f].Name)
		}
	})
}

// putMany writes n keys prefix<i> with conc goroutines.
func putMany(t testing.TB, cli *clientv3.Client, prefix string, n, conc, size int) {
	t.Helper()
	val := strings.Repeat("x", size)
	errc := make(chan error, conc)
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	for g := 0; g < conc; g++ {
		go func() {
			for i := range next {
				var err error
				for try := 0; try < 5; try++ {
					if _, err = cli.Put(ctx(t), fmt.Sprintf("%s%08d", prefix, i), val); err == nil {
						break
					}
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for g := 0; g < conc; g++ {
		if err := <-errc; err != nil {
			t.Fatalf("put: %v", err)
		}
	}
}

// TestFaultsSoak: random faults (kill/restart, pause, isolate a member,
// cut single links) on 5 members in namespaces for MESHETCD_SOAK_DURATION
// (default 10m) under the linearizability workload.
func TestFaultsSoak(t *testing.T) {
	if !soak() {
		t.Skip("soak test: run with MESHETCD_SOAK=1 (make soak)")
	}
	requireNetns(t)
	dur := 10 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("MESHETCD_SOAK_DURATION")); err == nil {
		dur = d
	}
	forEachClusterServer(t, func(t *testing.T, bin string) {
		lab := NewNetLab(t, 5)
		c := StartCluster(t, ClusterOptions{Bin: bin, Size: 5, Lab: lab, Args: []string{"--snapshot-count", "2000", "--snapshot-catchup-entries", "500"}})
		c.WaitHealthy(t)
		w := startWorkload(t, c, 10, 16, 5*time.Second)
		seed := time.Now().UnixNano()
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewSource(seed))
		end := time.Now().Add(dur)
		for round := 0; time.Now().Before(end); round++ {
			l := c.WaitLeader(t)
			victim := rng.Intn(len(c.Members))
			if rng.Intn(2) == 0 {
				victim = l
			}
			switch rng.Intn(4) {
			case 0:
				t.Logf("round %d: kill -9 %s (leader %s)", round, c.Members[victim].Name, c.Members[l].Name)
				c.Kill(victim)
				w.WaitProgress(t, 50)
				c.Restart(victim)
			case 1:
				t.Logf("round %d: SIGSTOP %s (leader %s)", round, c.Members[victim].Name, c.Members[l].Name)
				c.Pause(victim)
				w.WaitProgress(t, 50)
				time.Sleep(time.Duration(rng.Intn(4000)) * time.Millisecond) // random pause length
				c.Resume(victim)
			case 2:
				t.Logf("round %d: isolate %s (leader %s)", round, c.Members[victim].Name, c.Members[l].Name)
				lab.Isolate(victim)
				w.WaitProgress(t, 50)
				time.Sleep(time.Duration(rng.Intn(4000)) * time.Millisecond)
				lab.HealAll()
			case 3:
				// Cut random links that leave the graph connected (a line
				// 0-1-2-3-4 always stays).
				var cut []string
				for a := 0; a < 5; a++ {
					for b := a + 2; b < 5; b++ {
						if rng.Intn(2) == 0 {
							lab.Cut(a, b)
							cut = append(cut, fmt.Sprintf("%d-%d", a, b))
						}
					}
				}
				t.Logf("round %d: cut links %v (leader %s)", round, cut, c.Members[l].Name)
				w.WaitProgress(t, 200)
				lab.HealAll()
			}
			c.WaitHealthy(t)
			w.WaitProgress(t, 50)
		}
		w.Check(t)
	})
}
