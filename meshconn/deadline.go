package meshconn

import (
	"sync"
	"time"
)

// deadline turns a settable point in time into a channel that is closed
// once that time has passed, so a blocked reader can select on it. Setting
// a new deadline replaces the channel if the old one had fired, which lets
// a reader that timed out read again after the deadline moves.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	fired chan struct{}
}

func newDeadline() *deadline {
	return &deadline{fired: make(chan struct{})}
}

// set arms the deadline at t; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		// The old timer fired or is firing: wait until its func has
		// closed the channel, so we never replace it under its feet.
		<-d.fired
	}
	d.timer = nil
	closed := isClosed(d.fired)
	if t.IsZero() {
		if closed {
			d.fired = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !closed {
			close(d.fired)
		}
		return
	}
	if closed {
		d.fired = make(chan struct{})
	}
	ch := d.fired
	// The func closes only the channel it was armed for; set waits for it
	// (above) before replacing that channel, so this close happens once.
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

// wait returns the channel closed when the current deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fired
}

// stop releases the timer; the deadline is unusable afterwards only in
// that it no longer fires.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
