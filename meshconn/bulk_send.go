package meshconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// outTransfer is the sending side's mailbox: deliver (on the mesh's
// goroutine) records the receiver's latest word and pokes notify; the
// Send goroutine takes it. Acks are cumulative, so coalescing them loses
// nothing.
type outTransfer struct {
	id     uint64
	dst    mesh.PeerName
	notify chan struct{} // capacity 1

	mu sync.Mutex
	fb feedback
}

type feedback struct {
	heard bool   // anything arrived since the last take
	acked bool   // at least one ack ever (the receiver admitted us)
	next  uint64 // highest cumulative ack
	limit uint64 // highest window limit
	gap   bool   // a gap ack arrived since the last take
	gapAt uint64 // the next of the latest gap ack
	done  bool
	total uint64
	err   error // the receiver rejected or aborted the transfer
}

func (t *outTransfer) feedback(m *bulkMsg) {
	t.mu.Lock()
	f := &t.fb
	f.heard = true
	switch m.typ {
	case bulkTypeAck:
		f.acked = true
		f.next = max(f.next, m.next)
		f.limit = max(f.limit, m.limit)
		if m.flags&flagGap != 0 {
			f.gap, f.gapAt = true, m.next
		}
	case bulkTypeDone:
		f.done, f.total = true, m.total
	case bulkTypeReject:
		if f.err == nil {
			f.err = rejectError(m)
		}
	}
	t.mu.Unlock()
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// heardSinceTake reports whether anything arrived since the last take.
func (t *outTransfer) heardSinceTake() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fb.heard
}

// take returns the feedback and clears the one-shot flags.
func (t *outTransfer) take() feedback {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fb
	t.fb.heard, t.fb.gap = false, false
	return f
}

func rejectError(m *bulkMsg) error {
	switch m.code {
	case rejectUnknown, rejectAborted, rejectClosing:
		return fmt.Errorf("%w: receiver says %q", ErrAborted, m.reason)
	default:
		return fmt.Errorf("%w: %q", ErrRejected, m.reason)
	}
}

// Send transfers meta and then body to dst and returns nil only once dst's
// Handler has read the complete body, verified, and accepted it. Memory
// stays bounded by Window chunks whatever the body's size. It fails with
// an error matching ErrRejected, ErrAborted (the receiver lost the
// transfer, e.g. it restarted), ErrIdleTimeout (nothing heard for
// IdleTimeout), mesh.ErrNoRoute (unreachable for NoRouteGrace),
// ErrClosed, ctx's error, or a read error from body. body is read on the
// calling goroutine; a Read that blocks delays cancellation until it
// returns.
func (b *Bulk) Send(ctx context.Context, dst mesh.PeerName, meta []byte, body io.Reader) error {
	if err := validPeerName(string(dst)); err != nil {
		return fmt.Errorf("meshconn: bulk send: %w", err)
	}
	if dst == b.local {
		return fmt.Errorf("meshconn: bulk send to self: %w", ErrBadAddr)
	}
	if uint64(len(meta)) > math.MaxUint32 {
		return fmt.Errorf("meshconn: bulk send: %d bytes of meta: %w", len(meta), ErrMetaTooLarge)
	}
	t, err := b.register(dst)
	if err != nil {
		return err
	}
	defer b.unregister(t)
	start := time.Now()
	s := &sender{
		b:       b,
		t:       t,
		stream:  io.MultiReader(bytes.NewReader(meta), body),
		metaLen: uint32(len(meta)),
	}
	log := b.log.With(zap.String("dst", string(dst)), zap.Uint64("id", t.id))
	log.Info("sending bulk transfer", zap.Int("meta-bytes", len(meta)))
	err = s.run(ctx)
	b.rewinds.Add(uint64(s.rewinds))
	if err != nil {
		b.sentFailed.Add(1)
		if !errors.Is(err, ErrRejected) && !errors.Is(err, ErrAborted) {
			// Let the receiver clean up now rather than at its idle timeout.
			b.send(dst, &bulkMsg{typ: bulkTypeCancel, id: t.id, code: cancelBySender, reason: truncReason(err.Error())})
		}
		log.Warn("bulk transfer failed", zap.Uint64("bytes-acked", s.acked), zap.Error(err))
		return fmt.Errorf("meshconn: bulk transfer %016x to %s: %w", t.id, dst, err)
	}
	b.sentOK.Add(1)
	log.Info("sent bulk transfer", zap.Uint64("bytes", s.readOff), zap.Duration("took", time.Since(start)),
		zap.Int("retransmits", s.rewinds))
	return nil
}

func (b *Bulk) register(dst mesh.PeerName) (*outTransfer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("meshconn: bulk send: %w", ErrClosed)
	}
	for {
		// Random ids keep a restarted sender's new transfers apart from
		// its old ones still known to the receiver.
		id := rand.Uint64()
		if _, taken := b.out[id]; id != 0 && !taken {
			t := &outTransfer{id: id, dst: dst, notify: make(chan struct{}, 1)}
			b.out[id] = t
			return t, nil
		}
	}
}

func (b *Bulk) unregister(t *outTransfer) {
	b.mu.Lock()
	delete(b.out, t.id)
	b.mu.Unlock()
}

// chunkOut is a chunk sent but not yet acknowledged; d is its datagram.
type chunkOut struct {
	off  uint64
	n    int
	d    []byte
	sent bool // handed to the mesh since the last rewind

	sentAt time.Time // first handed to the mesh
	resent bool      // rewound: its ack gives no RTT sample
}

// sender is the state of one Send; it lives on the caller's goroutine.
type sender struct {
	b       *Bulk
	t       *outTransfer
	stream  io.Reader
	metaLen uint32

	opened  bool
	unacked []*chunkOut
	acked   uint64 // every byte before it was acknowledged
	readOff uint64 // bytes read from the stream
	limit   uint64 // the receiver's window limit
	eof     bool
	crc     uint32
	win     delayWindow // chunks allowed in flight (bulk_window.go)
	rewinds int
	free    [][]byte // datagram buffers of acknowledged chunks, for reuse
}

// errFatalSend marks a channel error that retrying cannot fix.
type errFatalSend struct{ err error }

func (e errFatalSend) Error() string { return e.err.Error() }
func (e errFatalSend) Unwrap() error { return e.err }

// transmit hands d to the mesh. A full queue or a missing route may pass
// (the mesh is rerouting, or the link is busy), so they report false and
// the caller retries; anything else is fatal.
func (s *sender) transmit(d []byte) (bool, error) {
	err := s.b.ch.Send(s.t.dst, d)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, mesh.ErrQueueFull), errors.Is(err, mesh.ErrNoRoute):
		return false, nil
	default:
		return false, errFatalSend{err}
	}
}

func (s *sender) run(ctx context.Context) error {
	cfg := &s.b.cfg
	maxRTO := max(cfg.RetransmitTimeout, cfg.IdleTimeout/4)
	rto := cfg.RetransmitTimeout
	s.win = newDelayWindow(cfg.Window)
	lastRewind := uint64(math.MaxUint64)
	openMsg := encodeBulk(&bulkMsg{typ: bulkTypeOpen, id: s.t.id, metaLen: s.metaLen})

	now := time.Now()
	heard := now          // last word from the receiver
	rtoAt := now.Add(rto) // act if nothing progresses before then
	var retryAt time.Time // retry unsent chunks then (zero: nothing pending)
	retryDelay := time.Millisecond
	var noRoute time.Time // since when dst has been unreachable

	if _, err := s.transmit(openMsg); err != nil {
		return err
	}
	timer := time.NewTimer(rto)
	defer timer.Stop()
	for {
		f := s.t.take()
		if f.err != nil {
			return f.err
		}
		if f.heard {
			heard = now
		}
		// Checked here, right after taking the feedback, so that time spent
		// blocked reading the body is not mistaken for the receiver's
		// silence.
		if now.Sub(heard) > cfg.IdleTimeout {
			return fmt.Errorf("nothing from receiver for %v: %w", cfg.IdleTimeout, ErrIdleTimeout)
		}
		if s.b.reachable(s.t.dst) {
			noRoute = time.Time{}
		} else if noRoute.IsZero() {
			noRoute = now
		} else if now.Sub(noRoute) > cfg.NoRouteGrace {
			return fmt.Errorf("receiver unreachable for %v: %w", cfg.NoRouteGrace, mesh.ErrNoRoute)
		}
		if f.acked && !s.opened {
			s.opened = true
			rtoAt = now.Add(rto)
		}
		s.limit = max(s.limit, f.limit)
		if f.next > s.acked {
			if f.next > s.readOff {
				return fmt.Errorf("%w: receiver acknowledged %d bytes, only %d sent", ErrAborted, f.next, s.readOff)
			}
			s.ackTo(f.next, now)
			rto = cfg.RetransmitTimeout
			rtoAt = now.Add(rto)
		}
		if f.gap && f.gapAt == s.acked && lastRewind != s.acked && len(s.unacked) > 0 {
			// Fast retransmit: once per hole, without waiting for the timer.
			s.rewind()
			lastRewind = s.acked
			retryAt = time.Time{}
		}
		if f.done {
			// The verdict implies every ack, some of which may be lost.
			if !s.eof || f.total != s.readOff {
				return fmt.Errorf("%w: receiver accepted %d bytes, %d sent (complete: %v)", ErrAborted, f.total, s.readOff, s.eof)
			}
			return nil
		}

		if s.opened {
			// push sends what is unsent unless the mesh pushed back and
			// the retry is not due yet.
			push := func() error {
				if !retryAt.IsZero() && now.Before(retryAt) {
					return nil
				}
				pending, err := s.flush()
				if err != nil {
					return err
				}
				if pending {
					retryAt = now.Add(retryDelay)
					retryDelay = min(2*retryDelay, cfg.RetransmitTimeout)
				} else {
					retryAt, retryDelay = time.Time{}, time.Millisecond
				}
				return nil
			}
			if err := push(); err != nil {
				return err
			}
			for !s.eof && len(s.unacked) < s.win.chunks() && s.readOff < s.limit {
				// Each chunk goes out as soon as it is read: a slow body
				// must not hold back chunks already in hand.
				if err := s.readChunk(); err != nil {
					return err
				}
				now = time.Now() // the read may have blocked
				if len(s.unacked) == 1 {
					rtoAt = now.Add(rto)
				}
				if err := push(); err != nil {
					return err
				}
			}
		}

		if !now.Before(rtoAt) && s.t.heardSinceTake() {
			// The receiver spoke while the body's Read blocked (the
			// feedback is taken at the top): judge progress by what it
			// said before calling this a timeout and resending.
			continue
		}
		if !now.Before(rtoAt) {
			// No progress for a whole timeout: resend what is
			// unacknowledged, or probe (for the open's ack, a window
			// update, or the verdict).
			switch {
			case !s.opened:
				if _, err := s.transmit(openMsg); err != nil {
					return err
				}
			case len(s.unacked) > 0:
				s.rewind()
				lastRewind = s.acked
				retryAt = time.Time{}
			default:
				if _, err := s.transmit(encodeBulk(&bulkMsg{typ: bulkTypePing, id: s.t.id})); err != nil {
					return err
				}
			}
			rto = min(2*rto, maxRTO)
			rtoAt = now.Add(rto)
			if retryAt.IsZero() && len(s.unacked) > 0 {
				now = time.Now()
				continue // send the rewound chunks now
			}
		}

		wake := min(rtoAt.Sub(now), heard.Add(cfg.IdleTimeout).Sub(now)+time.Millisecond, cfg.NoRouteGrace/4)
		if !retryAt.IsZero() {
			wake = min(wake, retryAt.Sub(now))
		}
		timer.Reset(max(wake, 0))
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-s.b.closing:
			return ErrClosed
		case <-s.t.notify:
		case <-timer.C:
		}
		now = time.Now()
	}
}

// readChunk reads the next chunk straight into a new datagram.
func (s *sender) readChunk() error {
	var d []byte
	if k := len(s.free); k > 0 {
		d, s.free = s.free[k-1], s.free[:k-1]
	} else {
		d = make([]byte, dataHeaderLen+s.b.chunk)
	}
	n, err := io.ReadFull(s.stream, d[dataHeaderLen:])
	switch {
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		s.eof = true
	case err != nil:
		return fmt.Errorf("meshconn: reading body: %w", err)
	}
	d = d[:dataHeaderLen+n]
	s.crc = crc32.Update(s.crc, castagnoli, d[dataHeaderLen:])
	var flags uint8
	var streamCRC uint32
	if s.eof {
		flags, streamCRC = flagFinal, s.crc
	}
	sealData(d, s.t.id, s.readOff, flags, streamCRC)
	s.unacked = append(s.unacked, &chunkOut{off: s.readOff, n: n, d: d})
	s.readOff += uint64(n)
	return nil
}

// flush sends the unsent chunks in order; it reports whether some remain
// because the mesh pushed back.
func (s *sender) flush() (bool, error) {
	for _, c := range s.unacked {
		if c.sent {
			continue
		}
		ok, err := s.transmit(c.d)
		if err != nil {
			return false, err
		}
		if !ok {
			return true, nil
		}
		c.sent = true
		if c.sentAt.IsZero() {
			c.sentAt = time.Now()
		}
	}
	return false, nil
}

// ackTo forgets acknowledged chunks and feeds the window the RTT of the
// newest one sent only once.
func (s *sender) ackTo(next uint64, now time.Time) {
	i := 0
	var newest *chunkOut
	// An empty final chunk is never covered by an ack: only the verdict
	// settles it, and until then it doubles as the retransmitted probe.
	for i < len(s.unacked) && s.unacked[i].n > 0 && s.unacked[i].off+uint64(s.unacked[i].n) <= next {
		// channel.Send copied the datagram, so the buffer is ours again.
		s.free = append(s.free, s.unacked[i].d[:cap(s.unacked[i].d)])
		if c := s.unacked[i]; !c.resent && !c.sentAt.IsZero() {
			newest = c
		}
		s.unacked[i] = nil
		i++
	}
	s.unacked = s.unacked[i:]
	s.acked = next
	if newest != nil {
		s.win.sample(now, now.Sub(newest.sentAt), next, s.readOff)
	}
}

// rewind marks every unacknowledged chunk for resending (go-back-N: the
// receiver keeps only in-order chunks) and halves the window.
func (s *sender) rewind() {
	for _, c := range s.unacked {
		c.sent = false
		c.resent = true
	}
	s.win.loss()
	s.rewinds++
}
