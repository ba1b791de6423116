package memnet

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Hostile-link faults: the partial failures real links show (loss, one-way
// links, latency with jitter, flapping, too little bandwidth), each as a
// stream transport like TCP experiences it. Every setter applies to
// existing and new connections; HealAll removes them all.

// LossRTO is the retransmission timeout a lost write costs on a lossy
// link (Linux's minimum TCP RTO); it doubles for each further loss of the
// same write, up to maxRetransmits times.
const LossRTO = 200 * time.Millisecond

const maxRetransmits = 6

// SetLoss makes the direction from → to lose each write with probability
// p (0 removes the fault). A stream transport does not lose data: like
// TCP, a lost write is retransmitted after LossRTO (doubling while the
// retransmissions are lost too) and every byte behind it waits, so loss
// shows as latency spikes and lower throughput, never as corruption (for
// that, see SetDropRate).
func (nw *Network) SetLoss(from, to string, p float64) {
	nw.mu.Lock()
	nw.loss[direction{from, to}] = p
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetJitter adds a random delay, uniform in [0, j), to each write from →
// to, on top of SetDelay (0 removes it). Order is kept: a write never
// overtakes an earlier one, as in a stream. SetDelay(50ms) with
// SetJitter(250ms) gives 50–300 ms.
func (nw *Network) SetJitter(from, to string, j time.Duration) {
	nw.mu.Lock()
	nw.jitter[direction{from, to}] = j
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetOneWay drops everything sent from → to while the other direction
// keeps working (dropped=false restores it): data from → to is held, never
// delivered until healed, while to → from is delivered. New dials between
// the two hang, since a handshake needs both directions.
func (nw *Network) SetOneWay(from, to string, dropped bool) {
	nw.mu.Lock()
	if dropped {
		nw.oneWay[direction{from, to}] = true
	} else {
		delete(nw.oneWay, direction{from, to})
	}
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetBandwidth limits the direction from → to to about bytesPerSec (0
// removes the limit): writes queue behind each other and become readable
// at the link's pace, and a writer blocks once the buffer is full.
func (nw *Network) SetBandwidth(from, to string, bytesPerSec int) {
	nw.mu.Lock()
	nw.bandwidth[direction{from, to}] = bytesPerSec
	nw.notifyLocked()
	nw.mu.Unlock()
}

// Flap makes the link between a and b go down (blackholed: silent, like a
// dead interface) and up again, each phase lasting a random time in
// [minPeriod, maxPeriod], starting with down, until Heal(a, b) or HealAll.
// The network owns the flapping goroutine; Heal and HealAll stop it and
// wait for it, leaving the link up.
func (nw *Network) Flap(a, b string, minPeriod, maxPeriod time.Duration) {
	pair := pairOf(a, b)
	nw.stopFlap(pair)
	nw.mu.Lock()
	seed := nw.rng.Uint64()
	f := &flapper{stop: make(chan struct{})}
	nw.flappers[pair] = f
	nw.mu.Unlock()
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	period := func() time.Duration {
		if maxPeriod <= minPeriod {
			return minPeriod
		}
		return minPeriod + time.Duration(rng.Int64N(int64(maxPeriod-minPeriod)))
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		down := true
		for {
			nw.mu.Lock()
			if down {
				nw.blackholed[pair] = true
			} else {
				delete(nw.blackholed, pair)
			}
			nw.notifyLocked()
			nw.mu.Unlock()
			t := time.NewTimer(period())
			select {
			case <-f.stop:
				t.Stop()
				return
			case <-t.C:
			}
			down = !down
		}
	}()
}

// flapper is one flapping link's goroutine.
type flapper struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

// stopFlap stops the pair's flapping, if any, and leaves the link up.
func (nw *Network) stopFlap(pair hostPair) {
	nw.mu.Lock()
	f := nw.flappers[pair]
	delete(nw.flappers, pair)
	nw.mu.Unlock()
	if f == nil {
		return
	}
	close(f.stop)
	f.wg.Wait()
	nw.mu.Lock()
	delete(nw.blackholed, pair)
	nw.notifyLocked()
	nw.mu.Unlock()
}

func (nw *Network) stopAllFlaps() {
	nw.mu.Lock()
	pairs := make([]hostPair, 0, len(nw.flappers))
	for p := range nw.flappers {
		pairs = append(pairs, p)
	}
	nw.mu.Unlock()
	for _, p := range pairs {
		nw.stopFlap(p)
	}
}
