package kvstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func proposalsRetried(s *Server) (total float64, byReason map[string]float64) {
	byReason = map[string]float64{}
	for _, r := range []string{retryLeaderOrRoute, retryTerm, retryLaterApplied, retryTimeout} {
		var m dto.Metric
		if err := s.metrics.proposalsRetried.WithLabelValues(r).Write(&m); err != nil {
			panic(err)
		}
		byReason[r] = m.GetCounter().GetValue()
		total += byReason[r]
	}
	return total, byReason
}

// In the steady state no member proposes a request twice, even when every
// commit takes longer than the first retry used to wait (5 heartbeats):
// the leader's copy is in its own log, and a follower's is late, not lost.
func TestClusterNoReproposalInSteadyState(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.ElectionTimeout = 500 * time.Millisecond })
	// 40 ms each way: a leader's commit takes >= 80 ms, a follower's >=
	// 160 ms, both beyond 5 heartbeats (50 ms).
	c.net.SetDelay(40 * time.Millisecond)
	li, fi := c.leader(), c.follower()
	// Start-up requests proposed before the first leader was known are
	// retried when it is: count from here.
	before := make([]float64, len(c.members))
	for i, s := range c.members {
		before[i], _ = proposalsRetried(s)
	}
	value := make([]byte, 16<<10)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for client := 0; client < 8; client++ {
		s := c.members[li]
		if client%2 == 1 {
			s = c.members[fi]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				key := fmt.Sprintf("c%d-%d", client, i)
				if _, err := s.Put(testCtx(t), &pb.PutRequest{Key: []byte(key), Value: value}); err != nil {
					errc <- fmt.Errorf("put %s: %w", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if lead := c.leader(); lead != li {
		t.Skipf("leader changed during the test (%d -> %d): re-proposals are expected then", li, lead)
	}
	for i, s := range c.members {
		total, by := proposalsRetried(s)
		role := "follower"
		if i == li {
			role = "leader"
		}
		if total != before[i] {
			t.Errorf("%s m%d proposed requests again in the steady state: %v (%v before the writes)", role, i, by, before[i])
		}
	}
}

// The decision itself: a leader's copy waits for a leader or term change;
// a forwarded copy goes again on a leader/term change, on a later request
// applied (seen twice), or after the timeout, backing off per copy.
func TestProposalRetryReason(t *testing.T) {
	p := newProposalRetry(10*time.Millisecond, 100*time.Millisecond)
	check := func(c *pendingCopy, term uint64, leader bool, want string, wantRecheck bool) {
		t.Helper()
		got, recheck := p.retryReason(c, term, leader)
		if got != want || recheck != wantRecheck {
			t.Fatalf("retryReason(%+v, term %d, leader %v) = %q, %v; want %q, %v", *c, term, leader, got, recheck, want, wantRecheck)
		}
	}

	lead := &pendingCopy{id: 10}
	lead.proposed(3, true)
	lead.at = time.Now().Add(-time.Hour) // waiting for ages changes nothing
	p.maxAppliedID.Store(20)             // nor do later requests applied
	check(lead, 3, true, "", false)
	check(lead, 3, true, "", false)
	check(lead, 4, true, retryTerm, false)
	check(lead, 3, false, retryTerm, false) // stepped down: no longer in office
	lead.lossEvent = true
	check(lead, 3, true, retryLeaderOrRoute, false)

	p.maxAppliedID.Store(0)
	fwd := &pendingCopy{id: 10}
	fwd.proposed(3, false)
	check(fwd, 3, false, "", false)
	check(fwd, 4, false, retryTerm, false)
	p.maxAppliedID.Store(11)
	check(fwd, 3, false, "", true) // maybe overtaken in flight: look again
	check(fwd, 3, false, retryLaterApplied, false)
	fwd.proposed(3, false)
	p.maxAppliedID.Store(5)
	check(fwd, 3, false, "", false)

	// No sample yet: the initial timeout is the election timeout.
	fwd.at = time.Now().Add(-90 * time.Millisecond)
	check(fwd, 3, false, "", false)
	fwd.at = time.Now().Add(-110 * time.Millisecond)
	check(fwd, 3, false, retryTimeout, false)
	if !fwd.timedOut {
		t.Fatal("a copy retried for its timeout is not marked timed out")
	}
	// A slow commit raises the timeout; a copy after one that timed out
	// waits twice as long, but never beyond the election timeout (1 s here).
	p = newProposalRetry(10*time.Millisecond, time.Second)
	slow := &pendingCopy{id: 1}
	slow.proposed(3, false)
	p.observe(slow, 200*time.Millisecond)
	if rto := p.rto(); rto != 600*time.Millisecond {
		t.Fatalf("rto after one 200 ms sample = %v, want 600ms (srtt + 4 rttvar)", rto)
	}
	fwd.at = time.Now().Add(-900 * time.Millisecond) // 2×600 ms, capped at 1 s
	check(fwd, 3, false, "", false)
	fwd.at = time.Now().Add(-p.rto() * 3 / 2)
	check(fwd, 3, false, "", false)
	fwd.at = time.Now().Add(-p.rto()*2 - time.Millisecond)
	check(fwd, 3, false, retryTimeout, false)
	// A very slow commit (a leader move inflates the estimate) cannot hold a
	// lost copy back longer than the election timeout.
	p.observe(slow, 3*time.Second)
	if rto := p.rto(); rto != time.Second {
		t.Fatalf("rto after a 3 s sample = %v, want the election timeout (1s)", rto)
	}
	fwd.at = time.Now().Add(-time.Second - time.Millisecond)
	check(fwd, 3, false, retryTimeout, false)

	// Copies sent on loss events (route changes while routes settle) do
	// not back off: the next one still waits one timeout (600 ms).
	p = newProposalRetry(10*time.Millisecond, time.Second)
	p.observe(slow, 200*time.Millisecond)
	ev := &pendingCopy{id: 30}
	ev.proposed(3, false)
	for range 3 {
		ev.lossEvent = true
		check(ev, 3, false, retryLeaderOrRoute, false)
		ev.proposed(3, false)
	}
	ev.at = time.Now().Add(-p.rto() - time.Millisecond)
	check(ev, 3, false, retryTimeout, false)
}

// A leader's own copy waits without a timer until a leader change arms
// one; a forwarded copy's timer is armed from the start and backs off.
func TestRetryTimerArming(t *testing.T) {
	hb, election := 10*time.Millisecond, 100*time.Millisecond
	leader := newRetryTimer(hb, election, false)
	defer leader.stop()
	if leader.C() != nil {
		t.Fatal("an unarmed timer has a channel")
	}
	leader.soon()
	select {
	case <-leader.C():
	case <-time.After(5 * time.Second):
		t.Fatal("soon did not arm the timer")
	}
	leader.fired()
	if leader.next != 2*5*hb {
		t.Fatalf("after the first retry the next waits %v, want %v", leader.next, 2*5*hb)
	}

	fwd := newRetryTimer(hb, election, true)
	defer fwd.stop()
	if fwd.C() == nil {
		t.Fatal("an armed timer has no channel")
	}
	select {
	case <-fwd.C():
	case <-time.After(5 * time.Second):
		t.Fatal("the armed timer never fired")
	}
}
