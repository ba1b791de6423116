package meshconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// Defaults of BulkConfig.
const (
	DefaultChunkSize         = 16 << 10
	DefaultWindow            = 64
	DefaultRetransmitTimeout = 200 * time.Millisecond
	DefaultIdleTimeout       = 10 * time.Second
	DefaultNoRouteGrace      = 2 * time.Second
	DefaultMaxMetaSize       = 4 << 20
	DefaultMaxIncoming       = 4
)

// BulkConfig configures a Bulk endpoint. The zero value is usable; it
// rejects incoming transfers because it has no Handler.
type BulkConfig struct {
	// ChunkSize is the largest chunk sent, capped so a chunk and its
	// header fit the channel's MaxPayload. Default 16 KiB: a link writes
	// one chunk at a time and a relay forwards it only once it has all of
	// it, so a Raft message queued behind a chunk waits for the whole
	// chunk per hop; smaller chunks keep that wait short. A 16 KiB frame
	// also fits the mesh link's 64 KiB I/O buffers, so it is sealed and
	// opened there without a separate write or copy.
	ChunkSize int
	// Window is the most chunks a sender keeps in flight (and must keep in
	// memory for retransmission), and how many chunk sizes a receiver
	// buffers ahead of its handler. Default 64 (1 MiB of 16 KiB chunks:
	// 64 MB/s at a 16 ms round trip; raise it for long fat links). Within
	// it the sender keeps only as many as the path carries without
	// queueing (bulk_window.go).
	Window int
	// RetransmitTimeout: a sender that sees no acknowledgement progress for
	// this long resends everything unacknowledged (doubling the wait on
	// each further timeout, up to IdleTimeout/4). Default 200 ms.
	RetransmitTimeout time.Duration
	// IdleTimeout: either side gives the transfer up after hearing nothing
	// from the other for this long. Default 10 s.
	IdleTimeout time.Duration
	// NoRouteGrace: either side gives the transfer up once the mesh has had
	// no route to the other for this long. Default 2 s.
	NoRouteGrace time.Duration
	// MaxMetaSize bounds the meta of incoming transfers, which is held in
	// memory. Default 4 MiB.
	MaxMetaSize int
	// MaxIncoming bounds concurrent incoming transfers; more are rejected
	// as busy. Default 4.
	MaxIncoming int
	// Handler consumes incoming transfers; nil rejects them all.
	Handler Handler
	// Logger receives transfer start, end and failure. Default: none.
	Logger *zap.Logger
}

func (c *BulkConfig) setDefaults() {
	if c.ChunkSize <= 0 {
		c.ChunkSize = DefaultChunkSize
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.RetransmitTimeout <= 0 {
		c.RetransmitTimeout = DefaultRetransmitTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.NoRouteGrace <= 0 {
		c.NoRouteGrace = DefaultNoRouteGrace
	}
	if c.MaxMetaSize <= 0 {
		c.MaxMetaSize = DefaultMaxMetaSize
	}
	if c.MaxIncoming <= 0 {
		c.MaxIncoming = DefaultMaxIncoming
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Incoming is one transfer being received.
type Incoming struct {
	Src  mesh.PeerName
	ID   uint64 // chosen by the sender; (Src, ID) identifies the transfer
	Meta []byte // complete before the Handler is called
	// Body yields the body as it arrives, every chunk verified. It returns
	// io.EOF only after the complete body arrived and its whole-stream
	// checksum matched, and an error (ErrAborted, ErrIdleTimeout,
	// mesh.ErrNoRoute, ErrClosed) if the transfer dies first. Reading
	// slowly slows the sender down; memory stays bounded.
	Body io.Reader
}

// Handler consumes one incoming transfer. It runs on its own goroutine;
// ctx is cancelled when the transfer is aborted or the endpoint closes.
// Returning nil after reading Body to io.EOF accepts the transfer, and only
// then does the sender's Send return nil. Returning an error, or returning
// before reading Body to io.EOF, rejects it; the error text reaches the
// sender.
type Handler func(ctx context.Context, in *Incoming) error

// Bulk is an endpoint for chunked, acknowledged transfers on one mesh
// datagram channel (bulk priority). It both sends (Send) and receives
// (BulkConfig.Handler). Close it to stop its goroutines.
type Bulk struct {
	cfg       BulkConfig
	local     mesh.PeerName
	ch        channel
	reachable func(mesh.PeerName) bool
	chunk     int // effective chunk size
	log       *zap.Logger

	mu       sync.Mutex
	out      map[uint64]*outTransfer
	in       map[inKey]*inTransfer
	finished map[inKey]verdict // recent outcomes, to answer late retransmits
	closing  chan struct{}
	closed   bool

	wg sync.WaitGroup // the janitor and every handler goroutine

	// ready is set once ch and chunk are; the mesh may deliver before
	// the channel it is opening has even been returned to us.
	ready atomic.Bool

	sentOK, sentFailed, recvOK, recvFailed, rewinds atomic.Uint64
}

// BulkStats counts an endpoint's transfers since it was opened.
type BulkStats struct {
	Sent, SendFailed        uint64 // outgoing transfers accepted by the receiver / failed
	Received, ReceiveFailed uint64 // incoming transfers accepted / rejected or aborted
	Rewinds                 uint64 // times a sender went back to resend unacknowledged chunks
}

// Stats returns the transfer counters.
func (b *Bulk) Stats() BulkStats {
	return BulkStats{
		Sent: b.sentOK.Load(), SendFailed: b.sentFailed.Load(),
		Received: b.recvOK.Load(), ReceiveFailed: b.recvFailed.Load(),
		Rewinds: b.rewinds.Load(),
	}
}

type inKey struct {
	src mesh.PeerName
	id  uint64
}

// verdict is a finished incoming transfer's answer, resent to a sender
// whose copy of it was lost.
type verdict struct {
	msg     []byte
	expires time.Time
}

// newBulk opens the channel through open and starts the endpoint.
// reachable may be nil (the peer is then always taken as reachable).
func newBulk(local mesh.PeerName, open openFunc, reachable func(mesh.PeerName) bool, cfg BulkConfig) (*Bulk, error) {
	if err := validPeerName(string(local)); err != nil {
		return nil, fmt.Errorf("meshconn: local peer name: %w", err)
	}
	cfg.setDefaults()
	if reachable == nil {
		reachable = func(mesh.PeerName) bool { return true }
	}
	b := &Bulk{
		cfg:       cfg,
		local:     local,
		reachable: reachable,
		log:       cfg.Logger.With(zap.String("component", "meshconn-bulk")),
		out:       make(map[uint64]*outTransfer),
		in:        make(map[inKey]*inTransfer),
		finished:  make(map[inKey]verdict),
		closing:   make(chan struct{}),
	}
	ch, err := open(b.deliver)
	if err != nil {
		return nil, fmt.Errorf("meshconn: open bulk channel: %w", err)
	}
	b.chunk = min(cfg.ChunkSize, ch.MaxPayload()-dataHeaderLen)
	if b.chunk < 1 {
		return nil, fmt.Errorf("meshconn: channel max payload %d leaves no room for data", ch.MaxPayload())
	}
	b.ch = ch
	b.ready.Store(true)
	b.wg.Add(1)
	go b.janitor()
	return b, nil
}

// ChunkSize is the effective chunk size of this endpoint.
func (b *Bulk) ChunkSize() int { return b.chunk }

// Close aborts every transfer in both directions, waits for the handler
// goroutines (which see their ctx cancelled and Body failing) and the
// janitor to return. It is idempotent.
func (b *Bulk) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return nil
	}
	b.closed = true
	close(b.closing)
	ins := b.incomingLocked()
	b.mu.Unlock()
	for _, t := range ins {
		b.abortIncoming(t, ErrClosed, rejectClosing, "receiver closing")
	}
	b.wg.Wait()
	if cl, ok := b.ch.(interface{ Close() error }); ok {
		if err := cl.Close(); err != nil {
			b.log.Debug("closing bulk channel", zap.Error(err))
		}
	}
	return nil
}

// deliver is the channel's DatagramHandler; it never blocks.
func (b *Bulk) deliver(src mesh.PeerName, payload []byte) {
	if !b.ready.Load() {
		return // as if lost: the sender retransmits
	}
	m, err := decodeBulk(payload)
	if err != nil {
		b.log.Debug("dropping malformed bulk datagram", zap.String("src", string(src)), zap.Error(err))
		return
	}
	switch m.typ {
	case bulkTypeOpen, bulkTypeData, bulkTypePing, bulkTypeCancel:
		b.deliverIncoming(src, &m)
	case bulkTypeAck, bulkTypeDone, bulkTypeReject:
		b.mu.Lock()
		t := b.out[m.id]
		b.mu.Unlock()
		if t != nil && t.dst == src {
			t.feedback(&m)
		}
	}
}

// send hands a control datagram to the mesh; losing it is fine (the
// protocol retransmits), so only unexpected failures are logged.
func (b *Bulk) send(dst mesh.PeerName, m *bulkMsg) {
	b.sendRaw(dst, encodeBulk(m))
}

func (b *Bulk) sendRaw(dst mesh.PeerName, d []byte) {
	if err := b.ch.Send(dst, d); err != nil && !errors.Is(err, mesh.ErrQueueFull) && !errors.Is(err, mesh.ErrNoRoute) {
		b.log.Debug("bulk control send failed", zap.String("dst", string(dst)), zap.Error(err))
	}
}

// janitor aborts incoming transfers whose sender went silent or
// unreachable, and forgets old verdicts.
func (b *Bulk) janitor() {
	defer b.wg.Done()
	tick := time.NewTicker(max(b.cfg.IdleTimeout/8, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.closing:
			return
		case now := <-tick.C:
			b.sweep(now)
		}
	}
}

func (b *Bulk) sweep(now time.Time) {
	b.mu.Lock()
	for k, v := range b.finished {
		if now.After(v.expires) {
			delete(b.finished, k)
		}
	}
	ins := b.incomingLocked()
	b.mu.Unlock()
	for _, t := range ins {
		if err := t.check(now, b.reachable(t.key.src)); err != nil {
			b.abortIncoming(t, err, rejectAborted, err.Error())
		}
	}
}

// incomingLocked lists the incoming transfers, to act on them after
// releasing b.mu (their methods take it again).
func (b *Bulk) incomingLocked() []*inTransfer {
	ins := make([]*inTransfer, 0, len(b.in))
	for _, t := range b.in {
		ins = append(ins, t)
	}
	return ins
}
