package meshconn

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// inTransfer is the receiving side of one transfer. Lock order: Bulk.mu
// before inTransfer.mu; neither is held while calling the Handler.
type inTransfer struct {
	b       *Bulk
	key     inKey
	metaLen uint64
	window  uint64 // body bytes buffered ahead of the handler
	started time.Time

	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	cond       sync.Cond // signalled on new data, final chunk and abort
	meta       []byte
	next       uint64 // stream offset expected next; all before it arrived
	crc        uint32 // CRC32C of stream[:next]
	final      bool   // the whole stream arrived and its checksum matched
	queue      []rchunk
	free       [][]byte // consumed chunk buffers, reused for new chunks
	queued     uint64   // body bytes in queue
	consumed   uint64   // body bytes read by the handler
	advertised uint64   // the last limit sent to the sender
	heard      time.Time
	noRoute    time.Time // since when the sender has been unreachable
	gapAckFor  uint64    // next, when a gap ack was last sent for it
	gapAcked   bool
	eof        bool  // the handler read io.EOF
	err        error // why the transfer was aborted
	handler    bool  // the handler goroutine was started
}

func (t *inTransfer) limitLocked() uint64 { return t.metaLen + t.consumed + t.window }

// ackLocked tells the sender how far the stream arrived and how far it may
// send. Called with t.mu held; Send never blocks.
func (t *inTransfer) ackLocked(gap bool) {
	t.advertised = t.limitLocked()
	m := bulkMsg{typ: bulkTypeAck, id: t.key.id, next: t.next, limit: t.advertised}
	if gap {
		m.flags = flagGap
	}
	t.b.send(t.key.src, &m)
}

func (b *Bulk) deliverIncoming(src mesh.PeerName, m *bulkMsg) {
	key := inKey{src: src, id: m.id}
	b.mu.Lock()
	t := b.in[key]
	if t == nil {
		v, done := b.finished[key]
		b.mu.Unlock()
		switch {
		case m.typ == bulkTypeCancel:
		case done:
			b.sendRaw(src, v.msg) // our verdict was lost; repeat it
		case m.typ == bulkTypeOpen:
			b.open(key, m)
		default:
			// Data or ping for a transfer we never had, or forgot
			// (restart): the sender must not wait for an ack.
			b.send(src, &bulkMsg{typ: bulkTypeReject, id: m.id, code: rejectUnknown, reason: "unknown transfer"})
		}
		return
	}
	b.mu.Unlock()

	switch m.typ {
	case bulkTypeCancel:
		b.abortIncoming(t, fmt.Errorf("%w: sender cancelled: %s", ErrAborted, m.reason), 0, "")
	case bulkTypeOpen, bulkTypePing:
		t.mu.Lock()
		t.heard = time.Now()
		t.ackLocked(false)
		t.mu.Unlock()
	case bulkTypeData:
		start, err := t.data(m)
		if err != nil {
			b.abortIncoming(t, err, rejectProtocol, err.Error())
			return
		}
		if start {
			b.startHandler(t)
		}
	}
}

// open admits a new transfer or rejects it.
func (b *Bulk) open(key inKey, m *bulkMsg) {
	var code uint8
	var reason string
	b.mu.Lock()
	switch {
	case b.closed:
		code, reason = rejectClosing, "receiver closing"
	case b.cfg.Handler == nil:
		code, reason = rejectByHandler, "receiver accepts no transfers"
	case uint64(m.metaLen) > uint64(b.cfg.MaxMetaSize):
		code, reason = rejectMetaLarge, fmt.Sprintf("meta of %d bytes exceeds %d", m.metaLen, b.cfg.MaxMetaSize)
	case len(b.in) >= b.cfg.MaxIncoming:
		code, reason = rejectBusy, fmt.Sprintf("busy with %d transfers", len(b.in))
	}
	if code != 0 {
		b.mu.Unlock()
		b.send(key.src, &bulkMsg{typ: bulkTypeReject, id: key.id, code: code, reason: reason})
		return
	}
	if _, dup := b.in[key]; dup {
		b.mu.Unlock()
		return // a concurrent copy of the same open won the race
	}
	now := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	t := &inTransfer{
		b:       b,
		key:     key,
		metaLen: uint64(m.metaLen),
		window:  uint64(b.cfg.Window) * uint64(b.chunk),
		started: now,
		ctx:     ctx,
		cancel:  cancel,
		heard:   now,
		meta:    make([]byte, 0, min(m.metaLen, 64<<10)), // grows as meta arrives
	}
	t.cond.L = &t.mu
	b.in[key] = t
	b.mu.Unlock()
	b.log.Info("receiving bulk transfer", zap.String("src", string(key.src)), zap.Uint64("id", key.id), zap.Uint32("meta-bytes", m.metaLen))
	t.mu.Lock()
	t.ackLocked(false)
	start := t.metaLen == 0 // nothing to wait for before the handler runs
	t.handler = start
	t.mu.Unlock()
	if start {
		b.startHandler(t)
	}
}

// data takes one chunk. It reports whether the handler should start now
// (the meta just completed), or a protocol error that kills the transfer.
func (t *inTransfer) data(m *bulkMsg) (start bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return false, nil
	}
	t.heard = time.Now()
	if t.final || m.offset < t.next {
		t.ackLocked(false) // a duplicate: our ack was lost or late
		return false, nil
	}
	if m.offset > t.next {
		// A chunk before this one was lost. Say so once per hole, so the
		// sender resends without waiting for its timer.
		if !t.gapAcked || t.gapAckFor != t.next {
			t.gapAcked, t.gapAckFor = true, t.next
			t.ackLocked(true)
		}
		return false, nil
	}
	if m.offset >= t.limitLocked() {
		t.ackLocked(false) // beyond the window we offered: drop it
		return false, nil
	}
	metaPart := uint64(0)
	if t.next < t.metaLen {
		metaPart = min(uint64(len(m.chunk)), t.metaLen-t.next)
	}
	t.meta = append(t.meta, m.chunk[:metaPart]...)
	if body := m.chunk[metaPart:]; len(body) > 0 {
		// The mesh reuses its buffer after we return; keep a copy, in a
		// recycled buffer so a long transfer does not churn the heap.
		t.queue = append(t.queue, rchunk{b: append(t.takeBuf(len(body)), body...)})
		t.queued += uint64(len(body))
	}
	t.crc = crc32.Update(t.crc, castagnoli, m.chunk)
	t.next += uint64(len(m.chunk))
	t.gapAcked = false
	if m.flags&flagFinal != 0 {
		switch {
		case t.next < t.metaLen:
			return false, fmt.Errorf("%w: stream of %d bytes ended inside %d bytes of meta", ErrAborted, t.next, t.metaLen)
		case t.crc != m.streamCRC:
			return false, fmt.Errorf("%w: stream checksum %08x, sender says %08x", ErrAborted, t.crc, m.streamCRC)
		}
		t.final = true
	}
	t.cond.Broadcast()
	t.ackLocked(false)
	if !t.handler && t.next >= t.metaLen {
		t.handler = true
		return true, nil
	}
	return false, nil
}

// check is the janitor's look at one transfer: has its sender gone?
func (t *inTransfer) check(now time.Time, reachable bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.heard) > t.b.cfg.IdleTimeout {
		return fmt.Errorf("meshconn: nothing from sender %s for %v: %w", t.key.src, t.b.cfg.IdleTimeout, ErrIdleTimeout)
	}
	if reachable {
		t.noRoute = time.Time{}
		return nil
	}
	if t.noRoute.IsZero() {
		t.noRoute = now
	} else if now.Sub(t.noRoute) > t.b.cfg.NoRouteGrace {
		return fmt.Errorf("meshconn: sender %s unreachable for %v: %w", t.key.src, t.b.cfg.NoRouteGrace, mesh.ErrNoRoute)
	}
	return nil
}

func (b *Bulk) startHandler(t *inTransfer) {
	b.mu.Lock()
	if b.closed || b.in[t.key] != t {
		b.mu.Unlock()
		return // aborted meanwhile; Close has or will cancel it
	}
	b.wg.Add(1)
	b.mu.Unlock()
	t.mu.Lock()
	in := &Incoming{Src: t.key.src, ID: t.key.id, Meta: t.meta, Body: bodyReader{t}}
	t.mu.Unlock()
	go b.runHandler(t, in)
}

func (b *Bulk) runHandler(t *inTransfer, in *Incoming) {
	defer b.wg.Done()
	err := b.cfg.Handler(t.ctx, in)
	t.mu.Lock()
	eof, total := t.eof, t.next
	t.mu.Unlock()
	if err == nil && !eof {
		err = errors.New("handler returned before reading the whole body")
	}
	var msg []byte
	if err == nil {
		msg = encodeBulk(&bulkMsg{typ: bulkTypeDone, id: t.key.id, total: total})
	} else {
		msg = encodeBulk(&bulkMsg{typ: bulkTypeReject, id: t.key.id, code: rejectByHandler, reason: truncReason(err.Error())})
	}
	b.mu.Lock()
	if b.in[t.key] != t {
		// Aborted while the handler ran: the sender was told, or is gone.
		b.mu.Unlock()
		t.cancel()
		return
	}
	delete(b.in, t.key)
	b.finished[t.key] = verdict{msg: msg, expires: time.Now().Add(2 * b.cfg.IdleTimeout)}
	b.mu.Unlock()
	t.cancel()
	b.sendRaw(t.key.src, msg)
	if err != nil {
		b.recvFailed.Add(1)
		b.log.Warn("rejected bulk transfer", zap.String("src", string(t.key.src)), zap.Uint64("id", t.key.id), zap.Error(err))
		return
	}
	b.recvOK.Add(1)
	b.log.Info("received bulk transfer", zap.String("src", string(t.key.src)), zap.Uint64("id", t.key.id),
		zap.Uint64("bytes", total), zap.Duration("took", time.Since(t.started)))
}

// abortIncoming ends t with err: its handler's Body fails and its ctx is
// cancelled. A nonzero code tells the sender why.
func (b *Bulk) abortIncoming(t *inTransfer, err error, code uint8, reason string) {
	var msg []byte
	if code != 0 {
		msg = encodeBulk(&bulkMsg{typ: bulkTypeReject, id: t.key.id, code: code, reason: truncReason(reason)})
	}
	b.mu.Lock()
	if b.in[t.key] != t {
		b.mu.Unlock()
		return
	}
	delete(b.in, t.key)
	if msg != nil {
		b.finished[t.key] = verdict{msg: msg, expires: time.Now().Add(2 * b.cfg.IdleTimeout)}
	}
	b.mu.Unlock()
	t.mu.Lock()
	t.err = err
	t.queue, t.queued, t.free = nil, 0, nil
	t.cond.Broadcast()
	t.mu.Unlock()
	t.cancel()
	b.recvFailed.Add(1)
	if msg != nil {
		b.sendRaw(t.key.src, msg)
	}
	b.log.Warn("aborted incoming bulk transfer", zap.String("src", string(t.key.src)), zap.Uint64("id", t.key.id), zap.Error(err))
}

func truncReason(s string) string {
	if len(s) > maxReasonLen {
		return s[:maxReasonLen]
	}
	return s
}

// rchunk is a received body chunk, read up to off.
type rchunk struct {
	b   []byte
	off int
}

// takeBuf returns an empty buffer with room for n bytes.
func (t *inTransfer) takeBuf(n int) []byte {
	for len(t.free) > 0 {
		b := t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
		if cap(b) >= n {
			return b
		}
	}
	return make([]byte, 0, max(n, t.b.chunk))
}

// bodyReader is Incoming.Body. A handler that copies the body with
// io.Copy (as snap.SaveDBFrom does into its file) gets WriteTo.
type bodyReader struct{ t *inTransfer }

func (r bodyReader) Read(p []byte) (int, error) {
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.waitLocked(); err != nil {
		return 0, err
	}
	c := t.queue[0]
	n := copy(p, c.b[c.off:])
	if c.off+n == len(c.b) {
		t.consumeLocked(1, 0, n)
	} else {
		t.consumeLocked(0, n, n)
	}
	return n, nil
}

// WriteTo writes queued chunks to w straight from their buffers, up to a
// quarter of the window per wake-up: one copy and one write per chunk,
// where Read into io.Copy's buffer costs a second copy and a lock round
// per chunk, and the window reopens while the rest of a batch is written.
func (r bodyReader) WriteTo(w io.Writer) (int64, error) {
	t := r.t
	var total int64
	for {
		t.mu.Lock()
		if err := t.waitLocked(); err != nil {
			t.mu.Unlock()
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		// Only this goroutine removes or changes queued chunks; data()
		// only appends, so the batch stays valid without the lock.
		batch := t.queue[:min(len(t.queue), max(1, t.b.cfg.Window/4))]
		t.mu.Unlock()

		whole, partial, n := 0, 0, 0
		var werr error
		for _, c := range batch {
			m, err := w.Write(c.b[c.off:])
			n += m
			if err == nil && m < len(c.b)-c.off {
				err = io.ErrShortWrite
			}
			if err != nil {
				partial, werr = m, err
				break
			}
			whole++
		}
		total += int64(n)
		t.mu.Lock()
		if t.err != nil {
			// Aborted while we wrote: the queue is gone.
			err := t.err
			t.mu.Unlock()
			return total, err
		}
		t.consumeLocked(whole, partial, n)
		t.mu.Unlock()
		if werr != nil {
			return total, werr
		}
	}
}

// waitLocked waits until a chunk is queued. It returns the transfer's
// error, or io.EOF once the whole body was consumed.
func (t *inTransfer) waitLocked() error {
	for len(t.queue) == 0 && t.err == nil && !t.final {
		t.cond.Wait()
	}
	if t.err != nil {
		return t.err
	}
	if len(t.queue) == 0 {
		t.eof = true
		return io.EOF
	}
	return nil
}

// consumeLocked takes n body bytes off the queue: whole chunks from its
// head, then partial bytes of the next one; their buffers are recycled.
// Once half of the window is free it is reopened explicitly: a sender that
// filled it is waiting for this, not for more data to ack.
func (t *inTransfer) consumeLocked(whole, partial, n int) {
	for i := range whole {
		if len(t.free) <= t.b.cfg.Window {
			t.free = append(t.free, t.queue[i].b[:0])
		}
		t.queue[i] = rchunk{}
	}
	t.queue = t.queue[whole:]
	if partial > 0 {
		t.queue[0].off += partial
	}
	t.queued -= uint64(n)
	t.consumed += uint64(n)
	if !t.final && t.limitLocked()-t.advertised >= t.window/2 {
		t.ackLocked(false)
	}
}
