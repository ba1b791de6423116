package meshconn

import (
	"errors"
	"fmt"
	"github.com/meshetcd/meshetcd/internal/ring"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/internal/bufpool"
	"github.com/meshetcd/meshetcd/mesh"
)

// channel is the datagram channel meshconn sends on; *mesh.DatagramChannel
// satisfies it. The sends must never block, and must copy what they send:
// meshconn reuses the buffers once they return. SendWithHeader sends
// header‖body as one datagram.
type channel interface {
	Send(dst mesh.PeerName, payload []byte) error
	SendWithHeader(dst mesh.PeerName, header, body []byte) error
	MaxPayload() int
}

// openFunc opens a datagram channel that delivers inbound datagrams to h.
// Listen and NewBulk build one from a router; tests pass their own.
type openFunc func(h mesh.DatagramHandler) (channel, error)

// DefaultQueueLen is the default inbound queue length of a PacketConn,
// matching etcd's per-peer stream buffer.
const DefaultQueueLen = 4096

// PacketConfig configures a PacketConn. The zero value is usable.
type PacketConfig struct {
	// QueueLen bounds the datagrams waiting for ReadFrom; when the queue
	// is full the newest arrival is dropped and counted. Default 4096.
	QueueLen int
	// Logger receives rare diagnostics (malformed datagrams). Default: none.
	Logger *zap.Logger
}

// PacketStats counts a PacketConn's traffic since it was opened.
type PacketStats struct {
	Sent      uint64 // datagrams handed to the mesh
	Received  uint64 // datagrams queued for ReadFrom
	Dropped   uint64 // datagrams dropped because the inbound queue was full
	Malformed uint64 // datagrams dropped because they failed to decode
}

type inPacket struct {
	src mesh.PeerName
	buf *[]byte // from PacketConn.bufs
}

// PacketConn is a net.PacketConn over one mesh datagram channel.
//
// Semantics: at most once; each datagram is delivered intact or not at
// all; FIFO per (src, dst) while the mesh route is stable, with possible
// loss or reordering when it changes; no duplicates. WriteTo never blocks
// and returns len(b) once the datagram is queued on the mesh, which does
// not mean it will arrive. ReadFrom with a buffer shorter than the
// datagram returns the truncated prefix and ErrShortBuffer.
// A datagram written to the PacketConn's own address is looped back.
type PacketConn struct {
	local mesh.PeerName
	addr  MeshAddr
	ch    channel
	log   *zap.Logger

	inbound ring.Queue[inPacket]
	closed  chan struct{}
	once    sync.Once
	rd      *deadline

	sent, received, dropped, malformed atomic.Uint64

	// bufs recycles the buffers of incoming datagrams once they were read
	// (and of looped-back ones), so a steady stream does not allocate per
	// datagram, whatever its size.
	bufs bufpool.Pool
}

var _ net.PacketConn = (*PacketConn)(nil)

// newPacketConn opens the channel through open and wires its inbound
// datagrams into the new PacketConn.
func newPacketConn(local mesh.PeerName, open openFunc, cfg PacketConfig) (*PacketConn, error) {
	if err := validPeerName(string(local)); err != nil {
		return nil, fmt.Errorf("meshconn: local peer name: %w", err)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &PacketConn{
		local:  local,
		addr:   MeshAddr{Peer: local},
		log:    cfg.Logger.With(zap.String("component", "meshconn")),
		closed: make(chan struct{}),
		rd:     newDeadline(),
	}
	c.inbound.Init(cfg.QueueLen)
	ch, err := open(c.deliver)
	if err != nil {
		return nil, fmt.Errorf("meshconn: open datagram channel: %w", err)
	}
	if ch.MaxPayload() <= packetHeaderLen {
		return nil, fmt.Errorf("meshconn: channel max payload %d leaves no room for data", ch.MaxPayload())
	}
	c.ch = ch
	return c, nil
}

// deliver is the channel's DatagramHandler. It never blocks: the datagram
// is copied (the mesh reuses its buffer) and queued, or dropped.
func (c *PacketConn) deliver(src mesh.PeerName, payload []byte) {
	select {
	case <-c.closed:
		return
	default:
	}
	data, err := decodePacket(payload)
	if err != nil {
		if c.malformed.Add(1) == 1 {
			// Logged once: a peer sending garbage would otherwise flood the log.
			c.log.Warn("dropping malformed datagram", zap.String("src", string(src)), zap.Error(err))
		}
		return
	}
	bp := c.bufs.Get(len(data))
	copy(*bp, data)
	if c.inbound.Push(inPacket{src: src, buf: bp}) {
		c.received.Add(1)
	} else {
		c.bufs.Put(bp)
		c.dropped.Add(1)
	}
}

// ReadFrom waits for the next datagram and copies it into b. See the type
// comment for truncation. It returns a net.Error with Timeout() == true
// (matching os.ErrDeadlineExceeded) when the read deadline passes, and an
// error matching net.ErrClosed once the PacketConn is closed.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p, err := c.next()
	if err != nil {
		return 0, nil, err
	}
	from := MeshAddr{Peer: p.src}
	n := copy(b, *p.buf)
	short := n < len(*p.buf)
	c.bufs.Put(p.buf)
	if short {
		return n, from, c.opErr("read", from, ErrShortBuffer)
	}
	return n, from, nil
}

// ReadPacket is ReadFrom that never truncates: it waits for the next
// datagram, appends it to b[:0] (growing b only when the datagram does not
// fit) and returns the result. A reader can thus start with a small or nil
// buffer instead of one of MaxDatagramSize, and keep the returned slice
// for the next call (or drop it after a rare large datagram). Errors are
// those of ReadFrom, never ErrShortBuffer.
func (c *PacketConn) ReadPacket(b []byte) ([]byte, net.Addr, error) {
	p, err := c.next()
	if err != nil {
		return b[:0], nil, err
	}
	b = append(b[:0], *p.buf...)
	c.bufs.Put(p.buf)
	return b, MeshAddr{Peer: p.src}, nil
}

// ReadPacketFunc waits for the next datagram and calls fn with it, without
// copying it out: payload is valid only until fn returns. A reader that
// decodes each datagram (raft messages: up to MaxDatagramSize) saves a copy
// and a buffer per datagram. Errors are those of ReadPacket; fn is not
// called then.
func (c *PacketConn) ReadPacketFunc(fn func(payload []byte, from net.Addr)) error {
	p, err := c.next()
	if err != nil {
		return err
	}
	defer c.bufs.Put(p.buf)
	fn(*p.buf, MeshAddr{Peer: p.src})
	return nil
}

// next waits for the next queued datagram, the deadline or Close.
func (c *PacketConn) next() (inPacket, error) {
	for {
		// Closed and expired take precedence over queued data, as on a socket.
		select {
		case <-c.closed:
			return inPacket{}, c.opErr("read", nil, ErrClosed)
		case <-c.rd.wait():
			return inPacket{}, c.opErr("read", nil, os.ErrDeadlineExceeded)
		default:
		}
		if p, ok := c.inbound.Pop(); ok {
			return p, nil
		}
		select {
		case <-c.inbound.Ready():
		case <-c.closed:
			return inPacket{}, c.opErr("read", nil, ErrClosed)
		case <-c.rd.wait():
			return inPacket{}, c.opErr("read", nil, os.ErrDeadlineExceeded)
		}
	}
}

// WriteTo queues b for addr (a MeshAddr or *MeshAddr) and returns len(b),
// or fails at once with an error matching mesh.ErrNoRoute,
// mesh.ErrQueueFull, mesh.ErrTooLarge, ErrClosed (and mesh.ErrClosed) or
// ErrBadAddr. It never blocks; b may be reused as soon as it returns.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	dst, err := addrPeer(addr)
	if err != nil {
		return 0, c.opErr("write", addr, err)
	}
	select {
	case <-c.closed:
		return 0, c.opErr("write", addr, ErrClosed)
	default:
	}
	if max := c.MaxDatagramSize(); len(b) > max {
		return 0, c.opErr("write", addr, fmt.Errorf("meshconn: %d-byte datagram, limit %d: %w", len(b), max, mesh.ErrTooLarge))
	}
	if dst == c.local {
		bp := c.bufs.Get(packetHeaderLen + len(b))
		defer c.bufs.Put(bp)
		encodePacketInto(*bp, b)
		c.deliver(dst, *bp)
		c.sent.Add(1)
		return len(b), nil
	}
	// The mesh copies the header and b straight into its frame: a raft
	// append of big entries is not copied into a datagram buffer first.
	var h [packetHeaderLen]byte
	putPacketHeader(&h, b)
	if err := c.ch.SendWithHeader(dst, h[:], b); err != nil {
		if errors.Is(err, mesh.ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return 0, c.opErr("write", addr, fmt.Errorf("meshconn: send to %s: %w", dst, err))
	}
	c.sent.Add(1)
	return len(b), nil
}

// MaxDatagramSize is the largest b WriteTo accepts, and the buffer size
// that guarantees ReadFrom never truncates.
func (c *PacketConn) MaxDatagramSize() int { return c.ch.MaxPayload() - packetHeaderLen }

// Close unblocks every ReadFrom and makes later calls fail with ErrClosed.
// It is idempotent. The mesh channel id stays registered with the router
// (the router has no way to unregister one); later arrivals are dropped.
func (c *PacketConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.rd.stop()
		if cl, ok := c.ch.(interface{ Close() error }); ok {
			if err := cl.Close(); err != nil {
				c.log.Debug("closing datagram channel", zap.Error(err))
			}
		}
	})
	return nil
}

// LocalAddr returns this peer's MeshAddr.
func (c *PacketConn) LocalAddr() net.Addr { return c.addr }

// SetDeadline sets the read deadline; writes never block.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline makes pending and future ReadFrom calls fail with a
// timeout once t has passed; the zero time means no deadline.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	select {
	case <-c.closed:
		return c.opErr("set", nil, ErrClosed)
	default:
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: WriteTo never blocks.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

// Stats returns the traffic counters.
func (c *PacketConn) Stats() PacketStats {
	return PacketStats{
		Sent:      c.sent.Load(),
		Received:  c.received.Load(),
		Dropped:   c.dropped.Load(),
		Malformed: c.malformed.Load(),
	}
}

func (c *PacketConn) opErr(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: Network, Source: c.addr, Addr: addr, Err: err}
}
