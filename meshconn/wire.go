package meshconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Wire formats. Everything is big-endian. Each datagram carries a CRC32C
// over everything after the CRC field, so a datagram damaged anywhere on
// its way (truncated, bit-flipped) is dropped rather than delivered: the
// mesh links are trusted, but "intact or not at all" is our promise, so we
// check it end to end ourselves. The checksum is cheap next to the copy.

// castagnoli is read-only after package initialisation.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var errMalformed = errors.New("meshconn: malformed datagram")

// ---- PacketConn datagrams ----
//
//	[0]    version (packetVersion)
//	[1:5]  CRC32C of [5:]
//	[5:9]  payload length
//	[9:]   payload

const (
	packetVersion   = 1
	packetHeaderLen = 9
)

// encodePacket returns a fresh datagram carrying payload.
func encodePacket(payload []byte) []byte {
	b := make([]byte, packetHeaderLen+len(payload))
	encodePacketInto(b, payload)
	return b
}

// encodePacketInto writes the datagram for payload into b, which must be
// exactly packetHeaderLen+len(payload) long.
func encodePacketInto(b, payload []byte) {
	copy(b[packetHeaderLen:], payload)
	putPacketHeader((*[packetHeaderLen]byte)(b), payload)
}

// putPacketHeader writes the header of the datagram carrying payload.
func putPacketHeader(h *[packetHeaderLen]byte, payload []byte) {
	h[0] = packetVersion
	binary.BigEndian.PutUint32(h[5:9], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, h[5:9])
	binary.BigEndian.PutUint32(h[1:5], crc32.Update(crc, castagnoli, payload))
}

// decodePacket returns the payload inside b (aliasing b) or an error.
func decodePacket(b []byte) ([]byte, error) {
	if len(b) < packetHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", errMalformed, len(b))
	}
	if b[0] != packetVersion {
		return nil, fmt.Errorf("%w: unknown version %d", errMalformed, b[0])
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if uint64(n) != uint64(len(b)-packetHeaderLen) {
		return nil, fmt.Errorf("%w: length field %d, %d bytes present", errMalformed, n, len(b)-packetHeaderLen)
	}
	if got, want := crc32c(b[5:]), binary.BigEndian.Uint32(b[1:5]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", errMalformed, got, want)
	}
	return b[packetHeaderLen:], nil
}

// ---- Bulk transfer messages ----
//
// A transfer moves one byte stream, meta followed by body; open announces
// the meta's length, data chunks carry the stream by offset.
//
//	[0]     version (bulkVersion)
//	[1]     type
//	[2:6]   CRC32C of [6:]
//	[6:14]  transfer id (chosen at random by the sender; with the sender's
//	        peer name it identifies the transfer)
//	[14:]   type-specific body:
//	  open:   metaLen u32
//	  data:   offset u64, flags u8 (flagFinal), streamCRC u32 (CRC32C of
//	          the whole stream, set on the final chunk), chunk bytes
//	  ack:    next u64 (every byte before it arrived and was verified),
//	          limit u64 (the sender may start chunks below it),
//	          flags u8 (flagGap: a chunk after a hole arrived)
//	  ping:   empty
//	  done:   total u64 (stream length the receiver accepted)
//	  reject, cancel: code u8, reason (UTF-8, at most maxReasonLen bytes)

const (
	bulkVersion     = 1
	bulkHeaderLen   = 14
	dataHeaderLen   = bulkHeaderLen + 8 + 1 + 4
	maxReasonLen    = 256
	flagFinal       = 1
	flagGap         = 1
	bulkTypeOpen    = 1
	bulkTypeData    = 2
	bulkTypeAck     = 3
	bulkTypePing    = 4
	bulkTypeDone    = 5
	bulkTypeReject  = 6
	bulkTypeCancel  = 7
	bulkTypeFirst   = bulkTypeOpen
	bulkTypeLast    = bulkTypeCancel
	rejectByHandler = 1
	rejectBusy      = 2
	rejectUnknown   = 3
	rejectMetaLarge = 4
	rejectClosing   = 5
	rejectProtocol  = 6
	rejectAborted   = 7
	cancelBySender  = 1
)

// bulkMsg is one decoded bulk datagram. chunk aliases the datagram.
type bulkMsg struct {
	typ       uint8
	id        uint64
	metaLen   uint32 // open
	offset    uint64 // data
	flags     uint8  // data, ack
	streamCRC uint32 // data
	chunk     []byte // data
	next      uint64 // ack
	limit     uint64 // ack
	total     uint64 // done
	code      uint8  // reject, cancel
	reason    string // reject, cancel
}

// bulkBodyMin is the smallest body each type may have; only data, reject
// and cancel bodies may be longer.
func bulkBodyMin(typ uint8) int {
	switch typ {
	case bulkTypeOpen:
		return 4
	case bulkTypeData:
		return 13
	case bulkTypeAck:
		return 17
	case bulkTypeDone:
		return 8
	case bulkTypeReject, bulkTypeCancel:
		return 1
	}
	return 0
}

func bulkBodyLen(m *bulkMsg) int {
	n := bulkBodyMin(m.typ)
	switch m.typ {
	case bulkTypeData:
		n += len(m.chunk)
	case bulkTypeReject, bulkTypeCancel:
		n += min(len(m.reason), maxReasonLen)
	}
	return n
}

// encodeBulk returns a fresh datagram for m.
func encodeBulk(m *bulkMsg) []byte {
	b := make([]byte, bulkHeaderLen+bulkBodyLen(m))
	b[0] = bulkVersion
	b[1] = m.typ
	binary.BigEndian.PutUint64(b[6:14], m.id)
	p := b[bulkHeaderLen:]
	switch m.typ {
	case bulkTypeOpen:
		binary.BigEndian.PutUint32(p, m.metaLen)
	case bulkTypeData:
		copy(p[13:], m.chunk)
		sealData(b, m.id, m.offset, m.flags, m.streamCRC)
		return b
	case bulkTypeAck:
		binary.BigEndian.PutUint64(p, m.next)
		binary.BigEndian.PutUint64(p[8:], m.limit)
		p[16] = m.flags
	case bulkTypeDone:
		binary.BigEndian.PutUint64(p, m.total)
	case bulkTypeReject, bulkTypeCancel:
		p[0] = m.code
		copy(p[1:], m.reason)
	}
	binary.BigEndian.PutUint32(b[2:6], crc32c(b[6:]))
	return b
}

// decodeBulk parses b; the returned chunk aliases b. It never panics.
func decodeBulk(b []byte) (bulkMsg, error) {
	var m bulkMsg
	if len(b) < bulkHeaderLen {
		return m, fmt.Errorf("%w: %d bytes is shorter than the bulk header", errMalformed, len(b))
	}
	if b[0] != bulkVersion {
		return m, fmt.Errorf("%w: unknown bulk version %d", errMalformed, b[0])
	}
	m.typ = b[1]
	if m.typ < bulkTypeFirst || m.typ > bulkTypeLast {
		return m, fmt.Errorf("%w: unknown bulk type %d", errMalformed, m.typ)
	}
	if got, want := crc32c(b[6:]), binary.BigEndian.Uint32(b[2:6]); got != want {
		return m, fmt.Errorf("%w: checksum %08x, want %08x", errMalformed, got, want)
	}
	m.id = binary.BigEndian.Uint64(b[6:14])
	p := b[bulkHeaderLen:]
	need := bulkBodyMin(m.typ)
	if len(p) < need {
		return m, fmt.Errorf("%w: bulk type %d body of %d bytes, need %d", errMalformed, m.typ, len(p), need)
	}
	exact := m.typ != bulkTypeData && m.typ != bulkTypeReject && m.typ != bulkTypeCancel
	if exact && len(p) != need {
		return m, fmt.Errorf("%w: bulk type %d body of %d bytes, want %d", errMalformed, m.typ, len(p), need)
	}
	switch m.typ {
	case bulkTypeOpen:
		m.metaLen = binary.BigEndian.Uint32(p)
	case bulkTypeData:
		m.offset = binary.BigEndian.Uint64(p)
		m.flags = p[8]
		m.streamCRC = binary.BigEndian.Uint32(p[9:])
		m.chunk = p[13:]
		if m.offset > 1<<62 {
			return m, fmt.Errorf("%w: offset %d out of range", errMalformed, m.offset)
		}
	case bulkTypeAck:
		m.next = binary.BigEndian.Uint64(p)
		m.limit = binary.BigEndian.Uint64(p[8:])
		m.flags = p[16]
	case bulkTypeDone:
		m.total = binary.BigEndian.Uint64(p)
	case bulkTypeReject, bulkTypeCancel:
		if len(p)-1 > maxReasonLen {
			return m, fmt.Errorf("%w: reason of %d bytes", errMalformed, len(p)-1)
		}
		m.code = p[0]
		m.reason = string(p[1:])
	}
	return m, nil
}

// sealData fills in the header and checksum of a data datagram whose chunk
// is already in b[dataHeaderLen:]; the sender reads the body straight into
// the datagram buffer, so the chunk is never copied twice.
func sealData(b []byte, id, offset uint64, flags uint8, streamCRC uint32) {
	b[0] = bulkVersion
	b[1] = bulkTypeData
	binary.BigEndian.PutUint64(b[6:14], id)
	binary.BigEndian.PutUint64(b[14:22], offset)
	b[22] = flags
	binary.BigEndian.PutUint32(b[23:27], streamCRC)
	binary.BigEndian.PutUint32(b[2:6], crc32c(b[6:]))
}
