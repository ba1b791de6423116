package grpcapi

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// Tests of the concurrency recipes (client-side, over our KV/Lease/Watch)
// and of the server-side Lock and Election services (what etcdctl lock and
// etcdctl elect use).

type interval struct{ start, end time.Time }

// checkNoOverlap fails if any two critical sections overlap in time.
func checkNoOverlap(t *testing.T, ivs []interval) {
	t.Helper()
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].start.Before(ivs[j].start) })
	for i := 1; i < len(ivs); i++ {
		if ivs[i].start.Before(ivs[i-1].end) {
			t.Fatalf("critical sections overlap: %v-%v and %v-%v",
				ivs[i-1].start, ivs[i-1].end, ivs[i].start, ivs[i].end)
		}
	}
}

// TestMutexNoOverlap: 20 goroutines contend on one concurrency.Mutex; the
// holders never overlap (an in-section counter and the section timestamps
// both check it).
func TestMutexNoOverlap(t *testing.T) {
	const workers, rounds = 20, 3
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()

	var (
		inside atomic.Int32
		mu     sync.Mutex
		ivs    []interval
		wg     sync.WaitGroup
	)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			s, err := concurrency.NewSession(e.client, concurrency.WithContext(ctx))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			m := concurrency.NewMutex(s, "/mutex-test")
			for range rounds {
				if err := m.Lock(ctx); err != nil {
					errs <- fmt.Errorf("worker %d lock: %w", w, err)
					return
				}
				start := time.Now()
				if n := inside.Add(1); n != 1 {
					errs <- fmt.Errorf("worker %d: %d holders at once", w, n)
				}
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				end := time.Now()
				mu.Lock()
				ivs = append(ivs, interval{start, end})
				mu.Unlock()
				if err := m.Unlock(ctx); err != nil {
					errs <- fmt.Errorf("worker %d unlock: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(ivs) != workers*rounds && !t.Failed() {
		t.Fatalf("%d critical sections, want %d", len(ivs), workers*rounds)
	}
	checkNoOverlap(t, ivs)
}

// TestElectionHandover: the second candidate wins once the leader's session
// closes; an observer sees both leaders in order.
func TestElectionHandover(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	s1, err := concurrency.NewSession(e.client, concurrency.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := concurrency.NewSession(e.client, concurrency.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	e1 := concurrency.NewElection(s1, "/election-test")
	e2 := concurrency.NewElection(s2, "/election-test")

	if err := e1.Campaign(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	obs := concurrency.NewElection(s2, "/election-test").Observe(ctx)
	if v := nextLeader(t, obs); v != "one" {
		t.Fatalf("observed leader %q, want one", v)
	}

	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, "two") }()
	// Still blocked while one leads (the handover below must be what
	// unblocks it).
	select {
	case err := <-won:
		t.Fatalf("second candidate won while the first leads: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := s1.Close(); err != nil { // revokes the lease, deletes the key
		t.Fatal(err)
	}
	select {
	case err := <-won:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wllTimeout):
		t.Fatal("second candidate never won")
	}
	if v := nextLeader(t, obs); v != "two" {
		t.Fatalf("observed leader %q, want two", v)
	}
	l, err := e2.Leader(ctx)
	if err != nil || string(l.Kvs[0].Value) != "two" {
		t.Fatalf("leader: %v %v", l, err)
	}
}

func nextLeader(t *testing.T, ch <-chan *clientv3.GetResponse) string {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("observe channel closed")
		}
		return string(r.Kvs[0].Value)
	case <-time.After(wllTimeout):
		t.Fatal("no leader observed")
	}
	return ""
}

// TestSTMCounter: concurrent serializable STM increments of one counter lose
// no update.
func TestSTMCounter(t *testing.T) {
	const workers, incs = 8, 10
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	if _, err := e.client.Put(ctx, "counter", "0"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range incs {
				_, err := concurrency.NewSTM(e.client, func(stm concurrency.STM) error {
					n, err := strconv.Atoi(stm.Get("counter"))
					if err != nil {
						return err
					}
					stm.Put("counter", strconv.Itoa(n+1))
					return nil
				}, concurrency.WithAbortContext(ctx))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	gr, err := e.client.Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(gr.Kvs[0].Value); got != strconv.Itoa(workers*incs) {
		t.Fatalf("counter = %s, want %d", got, workers*incs)
	}
}

// TestLockService drives v3lockpb like etcdctl lock: contending Lock calls
// (each with its own lease) never overlap, Unlock hands over.
func TestLockService(t *testing.T) {
	const workers = 5
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	lc := v3lockpb.NewLockClient(e.client.ActiveConnection())

	var (
		inside atomic.Int32
		mu     sync.Mutex
		ivs    []interval
		wg     sync.WaitGroup
	)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			g, err := e.client.Grant(ctx, 30)
			if err != nil {
				errs <- err
				return
			}
			resp, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: int64(g.ID)})
			if err != nil {
				errs <- fmt.Errorf("worker %d lock: %w", w, err)
				return
			}
			start := time.Now()
			if n := inside.Add(1); n != 1 {
				errs <- fmt.Errorf("worker %d: %d holders", w, n)
			}
			if len(resp.Key) == 0 || resp.Header.GetRevision() == 0 {
				errs <- fmt.Errorf("worker %d: lock response %+v", w, resp)
			}
			time.Sleep(5 * time.Millisecond)
			inside.Add(-1)
			end := time.Now()
			mu.Lock()
			ivs = append(ivs, interval{start, end})
			mu.Unlock()
			if _, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: resp.Key}); err != nil {
				errs <- fmt.Errorf("worker %d unlock: %w", w, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkNoOverlap(t, ivs)

	// A lock whose lease is revoked is released (what etcdctl relies on
	// when the lock holder dies).
	g1, err := e.client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock2"), Lease: int64(g1.ID)}); err != nil {
		t.Fatal(err)
	}
	g2, err := e.client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock2"), Lease: int64(g2.ID)})
		got <- err
	}()
	if _, err := e.client.Revoke(ctx, g1.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wllTimeout):
		t.Fatal("lock not handed over after the holder's lease was revoked")
	}
}

// TestElectionService drives v3electionpb like etcdctl elect (and
// elect --listen): Campaign, Leader, Observe, Proclaim, Resign.
func TestElectionService(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	ec := v3electionpb.NewElectionClient(e.client.ActiveConnection())
	name := []byte("svc-election")

	g1, err := e.client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	c1, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: name, Lease: int64(g1.ID), Value: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	if c1.Leader == nil || c1.Leader.Lease != int64(g1.ID) || string(c1.Leader.Name) != string(name) || c1.Header.GetRevision() == 0 {
		t.Fatalf("campaign: %+v", c1)
	}

	// elect --listen: Observe streams the current and every later leader.
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	obs, err := ec.Observe(octx, &v3electionpb.LeaderRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	expectObserved := func(want string) {
		t.Helper()
		r, err := obs.Recv()
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if string(r.Kv.Value) != want {
			t.Fatalf("observed %q, want %q", r.Kv.Value, want)
		}
	}
	expectObserved("a")

	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: c1.Leader, Value: []byte("a2")}); err != nil {
		t.Fatal(err)
	}
	expectObserved("a2")
	lr, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: name})
	if err != nil || string(lr.Kv.Value) != "a2" {
		t.Fatalf("leader: %+v %v", lr, err)
	}

	// A second candidate waits, then wins when the first resigns.
	g2, err := e.client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	won := make(chan error, 1)
	go func() {
		_, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: name, Lease: int64(g2.ID), Value: []byte("b")})
		won <- err
	}()
	if _, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: c1.Leader}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-won:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wllTimeout):
		t.Fatal("second candidate never won")
	}
	expectObserved("b")

	// Proclaim without a leader key is etcd's "leader" field error.
	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Value: []byte("x")}); err == nil {
		t.Fatal("proclaim without leader succeeded")
	}

	ocancel()
	for {
		if _, err := obs.Recv(); err != nil {
			if err == io.EOF {
				t.Log("observe ended with EOF")
			}
			break
		}
	}
}
