package kvstore

import (
	"sync"
	"sync/atomic"
	"time"
)

// Why a pending request is proposed again (label of
// meshetcd_server_proposals_retried_total).
const (
	retryLeaderOrRoute = "leader_or_route_change"
	retryTerm          = "term_change"
	retryLaterApplied  = "later_request_applied"
	retryTimeout       = "timeout"
)

// A request is proposed again only on evidence that its last copy may be
// lost; in the steady state none is, because every copy of a big request
// is written to every WAL and replicated again (200 puts of 1 MiB wrote
// 495-683 MiB of WAL instead of ~309 MiB, and on 3 loaded members the
// copies queued up until requests timed out).
//
// The evidence depends on where the copy went:
//
//   - Proposed while this member was the leader of term T: raft appended
//     it to the leader's own log (or Propose failed). A leader never
//     truncates its own log, so the entry commits unless leadership
//     changes: a leader change or a new term is the only evidence. Our
//     view of leader and term lags raft's but never skips a term, so a
//     copy raft forwarded because it had already lost office is caught
//     when the view catches up.
//   - Forwarded as a follower: the mesh may drop the MsgProp silently
//     (a lossy link, a queue on a link that died, a relay that dropped
//     it). Evidence: a leader, route or term change; or a request this member
//     proposed later already applied while this one did not (the leader
//     appends what one member forwards in the order it arrives, one
//     route delivers in order, and apply is in log order); or, with
//     nothing later to compare with (one client), no commit within a
//     retransmission timeout estimated like TCP's from the commit
//     latency of this member's forwarded requests (5 heartbeats to one
//     election timeout, doubled once a copy of the request timed out,
//     never beyond the election timeout), so a slow pipeline of big entries
//     raises the timeout instead of adding copies to it. Any route change counts (the mesh does not say which
//     routes lead to the leader, nor whether the old path died or only
//     degraded), so routes flapping under load still cost copies.
//
// A later request can overtake an earlier one between taking its id and
// reaching raft, so "a later one applied" counts only when it is still
// true a heartbeat later.
type proposalRetry struct {
	// maxAppliedID is the highest id of a request of this member that got
	// its result (ids from idutil.Generator grow with time on one member).
	maxAppliedID atomic.Uint64

	mu     sync.Mutex
	srtt   time.Duration // smoothed commit latency of forwarded requests
	rttvar time.Duration
	// minRTO, maxRTO bound the timeout, backed off or not: 5 heartbeats
	// (what a first retry waited before) up to one election timeout. A
	// longer bound let a copy lost right after a burst of route changes
	// (routes still settling when the change-triggered copy went) wait up
	// to 4 s once a leader move had inflated the latency estimate: a
	// member at the end of a line of five stalled 4.7 s
	// (TestPartialLineOfFiveLeaderInMiddle). initialRTO is the election
	// timeout, used until a forwarded request committed.
	minRTO, maxRTO, initialRTO time.Duration
}

func newProposalRetry(heartbeat, election time.Duration) *proposalRetry {
	minRTO := 5 * heartbeat
	if minRTO > election {
		minRTO = election
	}
	return &proposalRetry{minRTO: minRTO, maxRTO: election, initialRTO: election}
}

// observe records a request of this member that got its result. The
// latency of a forwarded request counts from its first copy, retried or
// not: counting only requests that needed one copy (Karn's rule) would
// sample only those faster than the timeout, and a slow pipeline would
// then keep the timeout too short and fill itself with copies.
func (p *proposalRetry) observe(c *pendingCopy, latency time.Duration) {
	for {
		old := p.maxAppliedID.Load()
		if c.id <= old || p.maxAppliedID.CompareAndSwap(old, c.id) {
			break
		}
	}
	if c.asLeader {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// RFC 6298 with alpha 1/8, beta 1/4.
	if p.srtt == 0 {
		p.srtt, p.rttvar = latency, latency/2
		return
	}
	d := p.srtt - latency
	if d < 0 {
		d = -d
	}
	p.rttvar += (d - p.rttvar) / 4
	p.srtt += (latency - p.srtt) / 8
}

// rto is how long a forwarded copy may wait for its commit with no other
// evidence before it is presumed lost.
func (p *proposalRetry) rto() time.Duration {
	p.mu.Lock()
	rto := p.srtt + 4*p.rttvar
	p.mu.Unlock()
	if rto == 0 {
		// No forwarded request committed yet: like TCP's initial 1 s,
		// something sure to exceed a commit (an election timeout).
		rto = p.initialRTO
	}
	return min(max(rto, p.minRTO), p.maxRTO)
}

// pendingCopy is what one waiting request knows about its last copy.
type pendingCopy struct {
	id       uint64
	at       time.Time // when the last copy was proposed
	term     uint64    // our view of the term then
	asLeader bool      // we were the leader then (in that term)
	// lossEvent: a leader change, or for a forwarded copy a route change,
	// since the last copy was proposed.
	lossEvent bool
	// laterApplied: at the previous check a later request had applied.
	laterApplied bool
	// timedOut: a copy was presumed lost for want of a commit in time
	// (not for a loss event): later copies wait longer.
	timedOut bool
}

// proposed records that a copy was just proposed, seen from term/leader.
func (c *pendingCopy) proposed(term uint64, leader bool) {
	c.at, c.term, c.asLeader = time.Now(), term, leader
	c.lossEvent, c.laterApplied = false, false
}

// retryReason decides at a retry-timer check whether to propose again: the
// reason, or "" to keep waiting (recheckSoon: check again in a heartbeat).
func (p *proposalRetry) retryReason(c *pendingCopy, term uint64, isLeader bool) (reason string, recheckSoon bool) {
	switch {
	case c.lossEvent:
		return retryLeaderOrRoute, false
	case term != c.term || (c.asLeader && !isLeader):
		return retryTerm, false
	case c.asLeader:
		return "", false
	case p.maxAppliedID.Load() > c.id:
		if c.laterApplied {
			return retryLaterApplied, false
		}
		c.laterApplied = true
		return "", true
	case !time.Now().Before(p.timeoutDue(c)):
		c.timedOut = true
		return retryTimeout, false
	}
	return "", false
}

// copyTimeout is how long a forwarded copy waits for its commit, with no
// other evidence, before it is presumed lost. It backs off once a copy
// timed out, like TCP: if the copies are not lost but slow, each one adds
// to the queue that makes them slow. Copies sent on a leader, route or
// term change, or because a later request applied, say nothing about
// slowness and do not back off: a copy lost while routes settled after a
// cut waited twice the timeout, and the member three hops from the leader
// in TestPartialLineOfFiveLeaderInMiddle stalled 1.7 s instead of 1.3 s.
func (p *proposalRetry) copyTimeout(c *pendingCopy) time.Duration {
	d := p.rto()
	if c.timedOut {
		d <<= 1
	}
	return min(d, p.maxRTO)
}

// timeoutDue is when the forwarded copy c is presumed lost for want of a
// commit (copyTimeout after it was proposed).
func (p *proposalRetry) timeoutDue(c *pendingCopy) time.Time {
	return c.at.Add(p.copyTimeout(c))
}
