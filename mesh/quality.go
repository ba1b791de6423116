package mesh

import (
	"sync"
	"time"
)

// Link quality: besides up or down, each connection measures how well it
// carries traffic, and routing avoids a poor direct link when a healthy
// two-hop path exists (routes.go, preferHealthyPaths).
//
// Loss is the share of pings not answered before the next ping is due (one
// heartbeat), as an exponentially weighted average over about the last
// eight pings. Over TCP nothing is lost outright: a lossy link shows as
// retransmission delays, so a late pong counts as lost; a link whose
// latency exceeds the heartbeat interval counts as lossy too, which is
// what Raft cares about. A one-way link never answers at all and is closed
// by the liveness check (errNoPong).
//
// Hysteresis, so routes do not flap between near-equal paths: a link
// becomes degraded when its loss reaches degradeLoss (after at least
// minQualityPings pings), and is healthy again only once its loss has
// fallen to recoverLoss and it has been degraded for at least
// minDegradedHold.
const (
	degradeLoss     = 0.25
	recoverLoss     = 0.05
	minQualityPings = 8
	minDegradedHold = 3 * time.Second
	lossWeight      = 1.0 / 8
)

// linkQuality is one connection's loss estimate and degraded state.
type linkQuality struct {
	mu             sync.Mutex
	lastPing       int64 // token (send time, unix nanos) of the last ping
	answered       bool  // the last ping got its pong in time
	pings, pongs   uint64
	loss           float64
	degraded       bool
	degradedSince  time.Time
	degradedEvents uint64 // times the link became degraded
}

// pinged records that a ping with token now is being sent, judging the
// previous one (answered in time or not). It reports whether the degraded
// state changed, so routes must be recalculated.
//
// A starved process (local health score above zero) does not count misses:
// the late pong may be our own backlog, not the link's loss (Lifeguard's
// lesson again); answered pings still lower the estimate.
func (q *linkQuality) pinged(now int64, heartbeat time.Duration, starved bool) (changed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pings > 0 && (q.answered || !starved) {
		miss := 0.0
		if !q.answered {
			miss = 1
		}
		q.loss += lossWeight * (miss - q.loss)
	}
	q.lastPing, q.answered = now, false
	q.pings++
	return q.updateLocked(time.Unix(0, now))
}

// pong records the answer to the ping sent at token sent, rtt later.
func (q *linkQuality) pong(sent int64, rtt time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pongs++
	if sent == q.lastPing {
		q.answered = true
	}
}

// updateLocked applies the hysteresis rule and reports a state change.
func (q *linkQuality) updateLocked(now time.Time) bool {
	switch {
	case !q.degraded && q.pings >= minQualityPings && q.loss >= degradeLoss:
		q.degraded, q.degradedSince = true, now
		q.degradedEvents++
		return true
	case q.degraded && q.loss <= recoverLoss && now.Sub(q.degradedSince) >= minDegradedHold:
		q.degraded = false
		return true
	}
	return false
}

// inherit starts a new connection's estimate where the peer's previous
// connection left it, so a link that keeps dying and coming back does not
// start healthy each time (the hysteresis would not hold otherwise). The
// pings judged so far carry over too: a lossy link whose connections each
// die before minQualityPings pings still adds up to a verdict.
func (q *linkQuality) inherit(prev linkQualityStatus) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.loss, q.degraded, q.degradedSince = prev.loss, prev.degraded, prev.degradedSince
	if prev.pings > 0 {
		// No ping of this connection is outstanding: the first round
		// judges nothing.
		q.pings, q.answered = prev.pings, true
	}
}

// failed records that the link's connection failed (declared dead, reset,
// closed without a goodbye) not for the first time in a while
// (Router.connClosed decides): strong evidence of a bad link.
// The link is degraded from now on, with the hold starting now, so the
// next connection over it inherits the verdict and traffic stays on a
// healthy path until the new connection has proven itself clean for
// minDegradedHold. Without this, a lossy link whose connections die before
// enough pings were judged came back "up" every time, took the traffic
// back and lost it again (both ends of a 30 % lossy link reconnecting every
// second, each time routed straight onto it). It reports whether the
// degraded state changed.
func (q *linkQuality) failed(now time.Time) (changed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.loss = max(q.loss, degradeLoss)
	q.pings = max(q.pings, minQualityPings)
	changed = !q.degraded
	if changed {
		q.degradedEvents++
	}
	q.degraded, q.degradedSince = true, now
	return changed
}

// linkQualityStatus is a snapshot for Status.
type linkQualityStatus struct {
	loss          float64
	degraded      bool
	pings, pongs  uint64
	degradedTimes uint64
	degradedSince time.Time
}

func (q *linkQuality) snapshot() linkQualityStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	return linkQualityStatus{loss: q.loss, degraded: q.degraded, pings: q.pings, pongs: q.pongs, degradedTimes: q.degradedEvents, degradedSince: q.degradedSince}
}

func (q *linkQuality) isDegraded() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.degraded
}
