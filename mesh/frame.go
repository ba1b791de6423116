package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
)

// Message types carried in the envelope.
const (
	msgHello     uint8 = 1 // handshake only
	msgPing      uint8 = 2 // payload: 8-byte token echoed by msgPong
	msgPong      uint8 = 3
	msgGossip    uint8 = 4 // neighbour-to-neighbour channel state; never forwarded as is
	msgUnicast   uint8 = 5 // routed hop by hop to dst
	msgBroadcast uint8 = 6 // forwarded along the source's spanning tree, dedup by (src, seq)
	msgGoodbye   uint8 = 7 // graceful close; payload: reason text
	msgTypeMax         = msgGoodbye
)

const (
	frameHeaderLen = 4  // big-endian u32 length of the (sealed) body
	aeadTagLen     = 16 // AES-256-GCM tag
	aeadNonceLen   = 12 // AES-256-GCM nonce: a per-direction counter, never sent
	// envelopeFixedLen: type, flags, ttl, channel(2), seq(8), srcLen, dstLen.
	envelopeFixedLen = 1 + 1 + 1 + 2 + 8 + 1 + 1
	maxEnvelopeHdr   = envelopeFixedLen + 2*maxNameLen
	// handshakeFrameCap bounds every frame before the hello is verified.
	handshakeFrameCap = 4 << 10
)

var errFrameTooLarge = errors.New("mesh: frame exceeds size cap")

// envelope is a decoded frame body. src, dst and payload alias the frame
// buffer; they are valid only while the buffer is.
type envelope struct {
	typ     uint8
	flags   uint8
	ttl     uint8
	channel ChannelID
	seq     uint64
	src     []byte
	dst     []byte
	payload []byte
}

// envelopeLen is the encoded size of an envelope.
func envelopeLen(src, dst PeerName, payloadLen int) int {
	return envelopeFixedLen + len(src) + len(dst) + payloadLen
}

// putEnvelopeHeader writes the header into b (which must have room) and
// returns the header length; the payload follows at that offset.
func putEnvelopeHeader(b []byte, typ, ttl uint8, ch ChannelID, seq uint64, src, dst PeerName) int {
	b[0] = typ
	b[1] = 0
	b[2] = ttl
	binary.BigEndian.PutUint16(b[3:], uint16(ch))
	binary.BigEndian.PutUint64(b[5:], seq)
	i := 13
	b[i] = uint8(len(src))
	i++
	i += copy(b[i:], src)
	b[i] = uint8(len(dst))
	i++
	i += copy(b[i:], dst)
	return i
}

// appendEnvelope appends an encoded envelope to b.
func appendEnvelope(b []byte, typ, ttl uint8, ch ChannelID, seq uint64, src, dst PeerName, payload []byte) []byte {
	start := len(b)
	n := envelopeLen(src, dst, len(payload))
	b = append(b, make([]byte, n)...)
	h := putEnvelopeHeader(b[start:], typ, ttl, ch, seq, src, dst)
	copy(b[start+h:], payload)
	return b
}

// parseEnvelope decodes b without copying. Every length is checked against
// the remaining bytes, so hostile input yields an error, never a panic.
func parseEnvelope(b []byte) (envelope, error) {
	var e envelope
	if len(b) < envelopeFixedLen {
		return e, fmt.Errorf("mesh: envelope of %d bytes is shorter than its header", len(b))
	}
	e.typ, e.flags, e.ttl = b[0], b[1], b[2]
	if e.typ == 0 || e.typ > msgTypeMax {
		return e, fmt.Errorf("mesh: unknown message type %d", e.typ)
	}
	e.channel = ChannelID(binary.BigEndian.Uint16(b[3:]))
	e.seq = binary.BigEndian.Uint64(b[5:])
	i := 13
	srcLen := int(b[i])
	i++
	if srcLen > maxNameLen || i+srcLen+1 > len(b) {
		return e, fmt.Errorf("mesh: envelope source length %d out of range", srcLen)
	}
	e.src = b[i : i+srcLen]
	i += srcLen
	dstLen := int(b[i])
	i++
	if dstLen > maxNameLen || i+dstLen > len(b) {
		return e, fmt.Errorf("mesh: envelope destination length %d out of range", dstLen)
	}
	e.dst = b[i : i+dstLen]
	i += dstLen
	e.payload = b[i:]
	return e, nil
}

// readFrameLength reads the 4-byte length prefix and validates it against
// limit before anyone allocates for it.
func readFrameLength(r io.Reader, hdr *[frameHeaderLen]byte, limit int) (int, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	return checkFrameLength(binary.BigEndian.Uint32(hdr[:]), limit)
}

// checkFrameLength validates a frame's length prefix against limit.
func checkFrameLength(n uint32, limit int) (int, error) {
	if n == 0 {
		return 0, fmt.Errorf("mesh: empty frame")
	}
	if uint64(n) > uint64(limit) {
		return 0, fmt.Errorf("%w: %d > %d", errFrameTooLarge, n, limit)
	}
	return int(n), nil
}

// frameBuf is a pooled buffer holding one frame: a length prefix slot,
// then the envelope, then room for the AEAD tag. A relayed frame travels
// from the reader of one connection to the writer of another in the same
// buffer, opened and re-sealed in place.
type frameBuf struct {
	b        []byte // len(b) == cap: the whole buffer
	n        int    // envelope length at b[frameHeaderLen:]
	class    int    // pool size class
	reroutes uint8  // times moved from a dying connection (Router.reroute)
}

// envelope returns the envelope bytes.
func (f *frameBuf) envelope() []byte { return f.b[frameHeaderLen : frameHeaderLen+f.n] }

// bufPool recycles frame buffers in power-of-two size classes, so the relay
// path does not allocate per frame.
type bufPool struct {
	classes [25]sync.Pool // 2^0 .. 2^24 bytes
}

const minBufClass = 9 // 512 bytes

// get returns a buffer whose capacity holds an envelope of envLen bytes
// plus prefix and tag.
func (p *bufPool) get(envLen int) *frameBuf {
	need := frameHeaderLen + envLen + aeadTagLen
	class := max(bits.Len(uint(need-1)), minBufClass)
	if class >= len(p.classes) {
		// Cannot happen for validated sizes; allocate without pooling.
		return &frameBuf{b: make([]byte, need), n: envLen, class: -1}
	}
	if v := p.classes[class].Get(); v != nil {
		f := v.(*frameBuf)
		f.n = envLen
		f.reroutes = 0
		return f
	}
	return &frameBuf{b: make([]byte, 1<<class), n: envLen, class: class}
}

func (p *bufPool) put(f *frameBuf) {
	if f == nil || f.class < 0 {
		return
	}
	p.classes[f.class].Put(f)
}
