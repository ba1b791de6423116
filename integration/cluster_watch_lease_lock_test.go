package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Watch, lease and lock across a multi-member cluster under member kills
// (issue 5, multi-member part). Same expectations for meshetcd and etcd.

// A watch connected to a member that is SIGKILLed resumes on another
// member from its last revision: every event exactly once, in order.
func TestClusterWatchSurvivesMemberKill(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)
		victim := follower(c, c.WaitLeader(t))
		writerIdx := follower(c, victim) // neither the victim
		// The watch client starts with the victim alone, so the stream is
		// on it; the other endpoints are added once it runs.
		wcli := c.Client(t, victim)
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		wch := wcli.Watch(wctx, "wk/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if r := <-wch; !r.Created {
			t.Fatalf("watch not created: %+v", r)
		}
		var others []string
		for i := range c.Members {
			if i != victim {
				others = append(others, c.Endpoints(i)[0])
			}
		}
		wcli.SetEndpoints(append([]string{c.Endpoints(victim)[0]}, others...)...)

		const n = 400
		wcl := c.Client(t, writerIdx)
		writeErr := make(chan error, 1)
		go func() {
			for i := 0; i < n; i++ {
				if _, err := wcl.Put(ctx(t), "wk/"+strconv.Itoa(i%7), strconv.Itoa(i)); err != nil {
					writeErr <- fmt.Errorf("put %d: %w", i, err)
					return
				}
				time.Sleep(5 * time.Millisecond) // pace the writes over the kill
			}
			writeErr <- nil
		}()

		next := 0
		var lastRev int64
		var killedAt time.Time
		var resumeAfter time.Duration
		timeout := time.After(readyTimeout)
		for next < n {
			select {
			case r, ok := <-wch:
				if !ok {
					t.Fatalf("watch channel closed after %d events", next)
				}
				if err := r.Err(); err != nil {
					t.Fatalf("watch error after %d events: %v", next, err)
				}
				for _, ev := range r.Events {
					v, _ := strconv.Atoi(string(ev.Kv.Value))
					if v != next {
						t.Fatalf("event %d: got value %d (lost or duplicated events)", next, v)
					}
					if ev.Kv.ModRevision <= lastRev {
						t.Fatalf("event %d: revision %d not after %d", next, ev.Kv.ModRevision, lastRev)
					}
					lastRev = ev.Kv.ModRevision
					next++
					if !killedAt.IsZero() && resumeAfter == 0 {
						resumeAfter = time.Since(killedAt)
					}
				}
				if next >= 100 && killedAt.IsZero() {
					c.Kill(victim)
					killedAt = time.Now()
				}
			case <-timeout:
				t.Fatalf("only %d of %d events within %v", next, n, readyTimeout)
			}
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: watch resumed %v after its member was killed; %d events exactly once", c.kind(), resumeAfter.Round(time.Millisecond), n)
		// Nothing more arrives (no duplicates after the last one).
		select {
		case r := <-wch:
			if len(r.Events) > 0 {
				t.Fatalf("unexpected extra events: %v", r.Events)
			}
		case <-time.After(500 * time.Millisecond):
		}
	})
}

// Lease keepalive through a follower keeps the lease alive well beyond
// its TTL; once keepalive stops, the lease expires.
func TestClusterLeaseKeepAliveThroughFollower(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)
		l := c.WaitLeader(t)
		f := follower(c, l)
		fcli := c.Client(t, f)
		const ttl = 3
		g, err := fcli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fcli.Put(ctx(t), "leased", "x", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		kctx, kcancel := context.WithCancel(context.Background())
		ka, err := fcli.KeepAlive(kctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range ka {
			}
		}()
		lcli := c.Client(t, l)
		hold := time.Now().Add(3 * ttl * time.Second)
		for time.Now().Before(hold) {
			r, err := lcli.Get(ctx(t), "leased")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) != 1 {
				t.Fatalf("leased key gone while kept alive through follower %s", c.Members[f].Name)
			}
			time.Sleep(200 * time.Millisecond)
		}
		ttlResp, err := lcli.TimeToLive(ctx(t), g.ID)
		if err != nil || ttlResp.TTL <= 0 {
			t.Fatalf("TimeToLive via leader: %+v %v", ttlResp, err)
		}
		kcancel()
		stopped := time.Now()
		for {
			r, err := lcli.Get(ctx(t), "leased")
			if err == nil && len(r.Kvs) == 0 {
				break
			}
			if time.Since(stopped) > ttl*time.Second+15*time.Second {
				t.Fatalf("lease did not expire %v after keepalive stopped", time.Since(stopped))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: lease (TTL %ds) expired %v after keepalive stopped", c.kind(), ttl, time.Since(stopped).Round(time.Millisecond))
	})
}

// A lease survives killing the leader: it does not expire before its TTL
// (counted from the grant request) and is not lost: it expires in the end.
// A second lease kept alive across the kill stays alive.
func TestClusterLeaseSurvivesLeaderKill(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)
		l := c.WaitLeader(t)
		cli := c.Client(t) // every endpoint: fails over
		const ttl = 10
		granted := time.Now()
		g, err := cli.Grant(ctx(t), ttl)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx(t), "lk", "x", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		g2, err := cli.Grant(ctx(t), 4)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx(t), "lk2", "x", clientv3.WithLease(g2.ID)); err != nil {
			t.Fatal(err)
		}
		// Note when lk2 is deleted (for the failure message).
		var delMu sync.Mutex
		var deletedAt time.Time
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		wch := c.Client(t, nonLeader(c, l)...).Watch(wctx, "lk2", clientv3.WithFilterPut())
		go func() {
			for r := range wch {
				if len(r.Events) > 0 {
					delMu.Lock()
					if deletedAt.IsZero() {
						deletedAt = time.Now()
					}
					delMu.Unlock()
				}
			}
		}()
		kctx, kcancel := context.WithCancel(context.Background())
		defer kcancel()
		ka, err := cli.KeepAlive(kctx, g2.ID)
		if err != nil {
			t.Fatal(err)
		}
		var kaMu sync.Mutex
		var kaLast time.Time
		var kaLastTTL int64
		kaDone := make(chan struct{})
		go func() {
			defer close(kaDone)
			for r := range ka {
				kaMu.Lock()
				kaLast, kaLastTTL = time.Now(), r.TTL
				kaMu.Unlock()
			}
		}()
		killed := time.Now()
		c.Kill(l)
		nl, took := waitNewLeader(t, c, l)
		t.Logf("new leader %s after %v", c.Members[nl].Name, took.Round(time.Millisecond))
		// Present until TTL (minus a margin for timing granularity).
		rcli := c.Client(t, nl)
		for time.Since(granted) < ttl*time.Second-500*time.Millisecond {
			r, err := rcli.Get(ctx(t), "lk")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) != 1 {
				t.Fatalf("lease expired prematurely: %v after grant (TTL %ds)", time.Since(granted), ttl)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Expires in the end: the new leader restarts the TTL at most once.
		for {
			r, err := rcli.Get(ctx(t), "lk")
			if err == nil && len(r.Kvs) == 0 {
				break
			}
			if time.Since(granted) > 2*ttl*time.Second+took+15*time.Second {
				t.Fatalf("lease not expired %v after grant (TTL %ds): lost by the new leader?", time.Since(granted), ttl)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: lease with TTL %ds expired %v after grant, across a leader kill", c.kind(), ttl, time.Since(granted).Round(time.Millisecond))
		r, err := rcli.Get(ctx(t), "lk2")
		if err != nil || len(r.Kvs) != 1 {
			kaMu.Lock()
			defer kaMu.Unlock()
			closed := "still open"
			select {
			case <-kaDone:
				closed = "closed"
			default:
			}
			delMu.Lock()
			del := deletedAt.Sub(killed).Round(time.Millisecond)
			delMu.Unlock()
			last := "none"
			if !kaLast.IsZero() {
				last = fmt.Sprintf("%v after the kill with TTL %d", kaLast.Sub(killed).Round(time.Millisecond), kaLastTTL)
			}
			t.Fatalf("lease (TTL 4s) kept alive across the leader kill is gone (err %v): its key was deleted %v after the kill; keepalive channel %s, last keepalive response: %s",
				err, del, closed, last)
		}
	})
}

// nonLeader returns the indexes of the members other than l.
func nonLeader(c *Cluster, l int) []int {
	var idx []int
	for i := range c.Members {
		if i != l {
			idx = append(idx, i)
		}
	}
	return idx
}

// 20 goroutines contend for one concurrency.Mutex through clients spread
// over 3 members; no two ever hold it at once, also while the leader is
// killed and restarted.
func TestClusterMutexContentionLeaderKill(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)
		var holders, maxHolders, acquired atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for g := 0; g < 20; g++ {
			idx := []int{g % 3, (g + 1) % 3, (g + 2) % 3}
			cli := c.Client(t, idx...)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					s, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
				inner:
					for {
						select {
						case <-stop:
							s.Close()
							return
						case <-s.Done():
							break inner // session lost (keepalive failed): a new one
						default:
						}
						m := concurrency.NewMutex(s, "/mutex")
						lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						err := m.Lock(lctx)
						cancel()
						if err != nil {
							if errors.Is(err, concurrency.ErrSessionExpired) {
								break inner
							}
							time.Sleep(50 * time.Millisecond)
							continue
						}
						h := holders.Add(1)
						if h > maxHolders.Load() {
							maxHolders.Store(h)
						}
						if h > 1 {
							errs <- fmt.Errorf("%d holders at once", h)
						}
						acquired.Add(1)
						time.Sleep(2 * time.Millisecond)
						holders.Add(-1)
						uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_ = m.Unlock(uctx)
						cancel()
					}
					s.Close()
				}
			}()
		}
		defer func() {
			select {
			case <-stop:
			default:
				close(stop)
			}
			wg.Wait()
		}()
		waitCount := func(min int64) {
			deadline := time.Now().Add(readyTimeout)
			for acquired.Load() < min {
				if time.Now().After(deadline) {
					t.Fatalf("only %d acquisitions (want %d) within %v", acquired.Load(), min, readyTimeout)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		waitCount(50)
		l := c.WaitLeader(t)
		c.Kill(l)
		before := acquired.Load()
		waitNewLeader(t, c, l)
		waitCount(before + 50)
		c.Restart(l)
		c.WaitHealthy(t)
		waitCount(acquired.Load() + 50)
		close(stop)
		wg.Wait()
		select {
		case err := <-errs:
			t.Fatalf("mutual exclusion violated: %v", err)
		default:
		}
		t.Logf("%s: %d acquisitions by 20 goroutines, max simultaneous holders %d", c.kind(), acquired.Load(), maxHolders.Load())
	})
}
