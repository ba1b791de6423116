package mesh

import (
	"sync"
	"time"
)

// Per-peer link statistics that outlive connections: a link replaced
// after a failure or a restart keeps adding to the same totals, so the
// Prometheus counters built from them (etcd_network_peer_*) never reset
// while the process lives. Live connections keep their own counters on
// the hot path; their totals are folded in here when they close, and
// Status adds the live ones on top.

// RTTBuckets are the upper bounds, in seconds, of the round-trip-time
// histogram in LinkStatus: etcd's etcd_network_peer_round_trip_time_seconds
// buckets (exponential from 100 µs, factor 2, 16 buckets).
var RTTBuckets = func() [16]float64 {
	var b [16]float64
	v := 0.0001
	for i := range b {
		b[i] = v
		v *= 2
	}
	return b
}()

// peerLinkStats are one peer's cumulative link figures.
type peerLinkStats struct {
	mu sync.Mutex
	// Totals of connections to the peer that have closed.
	bytesIn, bytesOut, framesIn, framesOut, drops uint64
	linksLost                                     uint64
	// Heartbeat round-trip times, all connections.
	rttCounts [len(RTTBuckets)]uint64 // per bucket, not cumulative
	rttSum    float64
	rttCount  uint64
	// The last closed connection's quality and the remote incarnation
	// (UID) it was measured with, inherited by the next connection to
	// that incarnation.
	lastQuality linkQualityStatus
	lastUID     uint64
	// lastFailure is when a connection to the peer last failed.
	lastFailure time.Time
}

// failureMemory is how long a link failure counts against the link: a
// second failure within it marks the link degraded (see failedAgain).
const failureMemory = 30 * time.Second

// failedAgain records a failure of a connection to the peer at now and
// reports whether another one failed within failureMemory before it. One
// failure alone (a clean cut, a false death of a busy process) says
// little about the link once it is back; failures that repeat do (a lossy
// or flapping link whose connections die young).
func (s *peerLinkStats) failedAgain(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	again := !s.lastFailure.IsZero() && now.Sub(s.lastFailure) < failureMemory
	s.lastFailure = now
	return again
}

func (s *peerLinkStats) observeRTT(d time.Duration) {
	sec := d.Seconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rttSum += sec
	s.rttCount++
	for i, ub := range RTTBuckets {
		if sec <= ub {
			s.rttCounts[i]++
			return
		}
	}
}

// closed folds a closing connection's totals in. The quality of a
// connection that was in use is kept for the next one (a standby closing
// says nothing newer about the link).
func (s *peerLinkStats) closed(c *conn, inUse, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytesIn += c.bytesIn.Load()
	s.bytesOut += c.bytesOut.Load()
	s.framesIn += c.framesIn.Load()
	s.framesOut += c.framesOut.Load()
	s.drops += c.drops.Load()
	if inUse {
		s.lastQuality, s.lastUID = c.quality.snapshot(), c.remoteUID
	}
	if lost {
		s.linksLost++
	}
}

// previousQuality returns the quality the peer's last connection ended
// with, if it was to the incarnation uid (a restarted peer starts fresh).
func (s *peerLinkStats) previousQuality(uid uint64) linkQualityStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastUID != uid {
		return linkQualityStatus{}
	}
	return s.lastQuality
}

// peerStatsFor returns p's statistics, creating them on first use. They
// are kept for the router's lifetime (bounded by MaxPeers names in
// practice, as the topology is).
func (r *Router) peerStatsFor(p PeerName) *peerLinkStats {
	r.linkStatsMu.Lock()
	defer r.linkStatsMu.Unlock()
	s := r.linkStats[p]
	if s == nil {
		s = &peerLinkStats{}
		r.linkStats[p] = s
	}
	return s
}
