package meshconn

import (
	"testing"
	"time"
)

// simulateLink runs the window over a link that carries rate chunks per
// millisecond after a base round trip: a window beyond the
// bandwidth-delay product queues, and the queue adds to every RTT.
// jitter, when set, delays all chunks but one per round (scheduling noise).
func simulateLink(t *testing.T, w *delayWindow, base time.Duration, rate float64, rounds int, jitter time.Duration) {
	t.Helper()
	now := time.Unix(1000, 0)
	var off uint64
	for range rounds {
		n := w.chunks()
		bdp := rate * float64(base) / float64(time.Millisecond)
		rtt := base
		if float64(n) > bdp {
			rtt = time.Duration(float64(n) / rate * float64(time.Millisecond))
		}
		sent := off + uint64(n)
		for i := range n {
			off++
			r := rtt
			if i > 0 {
				r += jitter
			}
			now = now.Add(rtt / time.Duration(n))
			w.sample(now, r, off, sent)
		}
	}
}

func TestDelayWindowGrowsToMaxWithoutQueueing(t *testing.T) {
	w := newDelayWindow(64)
	// 1,000 chunks per ms: the window never reaches the BDP.
	simulateLink(t, &w, time.Millisecond, 1000, 20, 0)
	if w.chunks() != 64 {
		t.Fatalf("window %d chunks on an uncongested link, want the maximum 64", w.chunks())
	}
}

func TestDelayWindowSettlesJustAboveBandwidthDelayProduct(t *testing.T) {
	for _, jitter := range []time.Duration{0, 5 * time.Millisecond} {
		w := newDelayWindow(64)
		// 10 chunks per ms at a 1 ms base RTT: BDP 10 chunks.
		simulateLink(t, &w, time.Millisecond, 10, 200, jitter)
		if n := w.chunks(); n < 10 || float64(n) > 10+vegasBeta+1 {
			t.Errorf("jitter %v: window %d chunks, want the BDP (10) plus at most %v queued", jitter, n, vegasBeta+1)
		}
	}
}

func TestDelayWindowLossHalvesAndKeepsAFloor(t *testing.T) {
	w := newDelayWindow(64)
	simulateLink(t, &w, time.Millisecond, 1000, 20, 0)
	w.loss()
	if w.chunks() != 32 || w.slowStart {
		t.Fatalf("after a loss: window %d, slow start %v; want 32, false", w.chunks(), w.slowStart)
	}
	for range 10 {
		w.loss()
	}
	if w.chunks() != int(vegasMinWindow) {
		t.Fatalf("after many losses: window %d, want the floor %v", w.chunks(), vegasMinWindow)
	}
	small := newDelayWindow(2)
	small.loss()
	if small.chunks() != 2 {
		t.Fatalf("a 2-chunk maximum window became %d", small.chunks())
	}
}

// A route change to a longer path raises every RTT for good: once the
// base ages out the window must grow back instead of reading the longer
// path as queueing forever.
func TestDelayWindowBaseAgesAfterRouteChange(t *testing.T) {
	w := newDelayWindow(64)
	simulateLink(t, &w, 100*time.Microsecond, 50, 50, 0) // BDP 5 chunks
	// Now 5 ms per round trip at 10 chunks per ms: BDP 50 chunks.
	simulateLink(t, &w, 5*time.Millisecond, 10, 20+int(vegasBaseAge/(5*time.Millisecond)), 0)
	if n := w.chunks(); n < 45 {
		t.Fatalf("window %d chunks after the base aged on a 50-chunk path", n)
	}
}

// On a fast link, busy processes' scheduling delays raise every round
// trip above the lowest one seen, which reads as queueing; below
// vegasFreeDelay that must not pin the window at its floor (a snapshot
// streamed at ~275 MB/s on loopback, against ~480 MB/s possible).
func TestDelayWindowIgnoresDelaysBelowFreeDelay(t *testing.T) {
	w := newDelayWindow(64)
	simulateLink(t, &w, 30*time.Microsecond, 1000, 5, 0) // one quiet moment sets the base
	// Then every round trip takes 250 µs: noise, not queueing (the link
	// carries 250 chunks per round trip).
	simulateLink(t, &w, 250*time.Microsecond, 1000, 50, 0)
	if w.chunks() != 64 {
		t.Fatalf("window %d chunks at a 250 µs round trip, want the maximum 64", w.chunks())
	}
}
