package meshconn

import "time"

// Delay-based window for bulk senders (TCP Vegas). A bulk transfer shares
// each mesh link, and so each TCP connection, with Raft's messages: every
// chunk queued in a socket buffer ahead of a heartbeat or an append delays
// it, and no priority in the mesh writer can reach into the kernel. A
// fixed window fills those buffers whenever the link is slower than the
// sender, so the window follows the queueing delay the transfer itself
// causes instead: per round trip, the minimum RTT of its chunks against the
// lowest RTT seen tells how many chunks sit in queues, and the window grows
// while that is below vegasAlpha chunks and shrinks above vegasBeta. On
// an idle fast link the window stays a few chunks over the path's
// bandwidth-delay product: full speed with almost nothing queued; on a long
// fat link it grows to Window. A round trip under vegasFreeDelay is never
// read as queueing, so on a fast link the window may grow until what it
// queues costs half a millisecond.
const (
	vegasAlpha = 0.5 // grow the window while fewer chunks than this are queued
	vegasBeta  = 1.5 // shrink it when more are
	// vegasMinWindow keeps a transfer moving when the RTT is noisy (a
	// loaded machine's scheduling delays look like queueing).
	vegasMinWindow = 4.0
	// vegasFreeDelay: a round trip shorter than this is never read as
	// queueing. On a fast link the scheduling noise of busy processes
	// (hundreds of microseconds on loopback) looks like queued chunks and
	// pinned the window at its floor, capping a snapshot transfer near
	// 275 MB/s; whatever queues within this delay holds a Raft message
	// back by less than a millisecond, nothing against a heartbeat.
	vegasFreeDelay = 500 * time.Microsecond
	// vegasBaseAge is how long the lowest RTT stays the reference: a route
	// change to a longer path must not look like queueing forever.
	vegasBaseAge = 2 * time.Second
)

// delayWindow is one sender's congestion window in chunks.
type delayWindow struct {
	max       float64
	cwnd      float64
	slowStart bool // double per round trip until chunks start queueing

	base     time.Duration // lowest RTT since baseAt
	baseAt   time.Time
	roundEnd uint64        // sent offset when the round began; an ack past it ends the round
	roundMin time.Duration // lowest RTT of the current round; 0: none yet
}

func newDelayWindow(maxChunks int) delayWindow {
	w := delayWindow{max: float64(maxChunks), slowStart: true}
	w.cwnd = min(w.max, 2*vegasMinWindow)
	return w
}

// chunks is how many chunks may be in flight.
func (w *delayWindow) chunks() int { return max(1, int(w.cwnd)) }

// sample takes the RTT of a chunk sent once and acknowledged now, with
// acked the new cumulative ack and sent the offset sending has reached.
func (w *delayWindow) sample(now time.Time, rtt time.Duration, acked, sent uint64) {
	if rtt <= 0 {
		rtt = time.Nanosecond
	}
	switch {
	case w.base == 0 || rtt < w.base:
		w.base, w.baseAt = rtt, now
	case now.Sub(w.baseAt) > vegasBaseAge:
		// An aged base restarts from this round's lowest RTT; a much
		// longer one is a longer path (a route change), whose larger
		// bandwidth-delay product slow start finds quickly.
		old := w.base
		w.base, w.baseAt = rtt, now
		if w.roundMin != 0 {
			w.base = min(rtt, w.roundMin)
		}
		if w.base > 2*old {
			w.slowStart = true
		}
	}
	if w.roundMin == 0 || rtt < w.roundMin {
		w.roundMin = rtt
	}
	if acked <= w.roundEnd {
		return // a chunk sent before the round began
	}
	// One round trip done: judge it by its least delayed chunk, which
	// filters out scheduling noise.
	queued := w.cwnd * float64(w.roundMin-w.base) / float64(w.roundMin)
	if w.roundMin < vegasFreeDelay {
		queued = 0
	}
	switch {
	case w.slowStart && queued <= vegasAlpha:
		w.cwnd *= 2
	case w.slowStart:
		w.slowStart = false
		w.cwnd = w.cwnd*float64(w.base)/float64(w.roundMin) + vegasAlpha
	case queued < vegasAlpha:
		w.cwnd++
	case queued > vegasBeta:
		w.cwnd--
	}
	w.cwnd = min(max(w.cwnd, vegasMinWindow), w.max)
	w.roundEnd, w.roundMin = sent, 0
}

// loss halves the window (a retransmission: a queue overflowed or a link
// dropped chunks) and ends slow start.
func (w *delayWindow) loss() {
	w.cwnd = max(min(vegasMinWindow, w.max), w.cwnd/2)
	w.slowStart = false
}
