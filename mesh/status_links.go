package mesh

import (
	"slices"
	"time"
)

// LinkStatus is the health of our link to one peer and the path our
// traffic to it (Raft's included) takes. Byte, frame and failure counts
// are cumulative over every connection to the peer since this router
// started, so they never go back when a link is replaced.
type LinkStatus struct {
	Peer PeerName `json:"peer"`
	// State is the direct link's: "up", "suspect" (silent, awaiting
	// confirmation before it is declared dead), "degraded" (lossy or
	// slow: traffic prefers a healthy two-hop path) or "down" (no direct
	// connection; traffic is relayed if Path is set).
	State string `json:"state"`
	// RTT is the heartbeat round-trip time (moving average) of the direct
	// link; Loss the share of heartbeats not answered within one interval
	// (moving average over about eight).
	RTT        string  `json:"rtt,omitempty"`
	RTTSeconds float64 `json:"rtt_seconds,omitempty"`
	Loss       float64 `json:"loss"`
	// Path is the peers our frames to Peer pass through, Peer last; Hops
	// is its length (0: unreachable).
	Path []PeerName `json:"path"`
	Hops int        `json:"hops"`
	// Cumulative figures over every connection to the peer.
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
	FramesSent    uint64 `json:"frames_sent"`
	FramesRecv    uint64 `json:"frames_received"`
	SendFailures  uint64 `json:"send_failures"` // frames refused by a full send queue
	LinksLost     uint64 `json:"links_lost"`
	// RTTHistogram counts heartbeat round trips per RTTBuckets bucket
	// (not cumulative; the last element counts those above every bound).
	RTTHistogram []uint64 `json:"-"`
	RTTSum       float64  `json:"-"`
	RTTCount     uint64   `json:"-"`
}

// Link states in LinkStatus.State.
const (
	LinkUp       = "up"
	LinkSuspect  = "suspect"
	LinkDegraded = "degraded"
	LinkDown     = "down"
)

// links reports every peer we have statistics for or know from the
// topology, under r.mu so that a closing connection is counted exactly
// once (connClosed folds it into the totals under the same lock).
func (r *Router) linksLocked(rt *routeTable) []LinkStatus {
	names := map[PeerName]bool{}
	for name := range r.topo.records {
		if name != r.name {
			names[name] = true
		}
	}
	r.linkStatsMu.Lock()
	stats := make(map[PeerName]*peerLinkStats, len(r.linkStats))
	for name, s := range r.linkStats {
		stats[name] = s
		names[name] = true
	}
	r.linkStatsMu.Unlock()
	live := r.conns.current()
	out := make([]LinkStatus, 0, len(names))
	for name := range names {
		ls := LinkStatus{Peer: name, State: LinkDown, Path: rt.path(name), Hops: rt.hops[name]}
		if ls.Path == nil {
			ls.Path = []PeerName{}
		}
		if s := stats[name]; s != nil {
			s.mu.Lock()
			ls.BytesSent, ls.BytesReceived = s.bytesOut, s.bytesIn
			ls.FramesSent, ls.FramesRecv = s.framesOut, s.framesIn
			ls.SendFailures, ls.LinksLost = s.drops, s.linksLost
			ls.RTTHistogram = append(s.rttCounts[:0:0], s.rttCounts[:]...)
			ls.RTTSum, ls.RTTCount = s.rttSum, s.rttCount
			s.mu.Unlock()
		}
		if c := live[name]; c != nil {
			ls.BytesSent += c.bytesOut.Load()
			ls.BytesReceived += c.bytesIn.Load()
			ls.FramesSent += c.framesOut.Load()
			ls.FramesRecv += c.framesIn.Load()
			ls.SendFailures += c.drops.Load()
			q := c.quality.snapshot()
			ls.Loss = q.loss
			if rtt := time.Duration(c.rtt.Load()); rtt > 0 {
				ls.RTT, ls.RTTSeconds = rtt.String(), rtt.Seconds()
			}
			switch {
			case c.suspectSince.Load() != 0:
				ls.State = LinkSuspect
			case q.degraded:
				ls.State = LinkDegraded
			default:
				ls.State = LinkUp
			}
		}
		out = append(out, ls)
	}
	slices.SortFunc(out, func(a, b LinkStatus) int {
		if a.Peer < b.Peer {
			return -1
		}
		return 1
	})
	return out
}
