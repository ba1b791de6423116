package mesh

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Buffer sizes of a connection's reader and writer. A larger buffer means
// fewer read and write system calls when frames queue up (each call moves
// up to this many bytes); 64 KiB is a loopback TCP segment's worth and costs
// 128 KiB per neighbour.
const (
	linkReadBufSize  = 64 << 10
	linkWriteBufSize = 64 << 10
)

// linkWriter batches sealed frames for one connection. Unlike a
// bufio.Writer it seals each frame straight into its output buffer, so a
// frame's bytes are touched once (by the cipher) instead of being sealed in
// place and then copied; frames too large for the buffer are sealed in
// place and written on their own.
type linkWriter struct {
	w     io.Writer
	buf   []byte // pending output; cap is the flush threshold
	batch bool   // pack small frames into batched records (version 3)

	recStart int          // offset of the open batched record in buf, or -1
	recSend  *cipherState // the cipher the open record will be sealed with
}

func newLinkWriter(w io.Writer, size int, batch bool) *linkWriter {
	if size < frameHeaderLen+batchRecordMax+aeadTagLen {
		batch = false
	}
	return &linkWriter{w: w, buf: make([]byte, 0, size), batch: batch, recStart: -1}
}

// Buffered is the number of bytes waiting for Flush.
func (lw *linkWriter) Buffered() int { return len(lw.buf) }

// Flush seals any open batched record and writes the pending bytes.
func (lw *linkWriter) Flush() error {
	if err := lw.closeRecord(lw.recSend); err != nil {
		return err
	}
	if len(lw.buf) == 0 {
		return nil
	}
	_, err := lw.w.Write(lw.buf)
	lw.buf = lw.buf[:0]
	return err
}

// writeFrame seals f's envelope with send (nil: plaintext) and queues the
// length prefix and body. It returns the bytes the frame takes on the wire.
func (lw *linkWriter) writeFrame(send *cipherState, f *frameBuf) (int, error) {
	if lw.batching(send, f) {
		return lw.appendToRecord(send, f)
	}
	// Frames keep their order: an open record is sealed (and takes its
	// nonce) before this frame is.
	if err := lw.closeRecord(send); err != nil {
		return 0, err
	}
	wire := frameHeaderLen + f.n + send.overhead()
	if wire > cap(lw.buf)-len(lw.buf) {
		if err := lw.Flush(); err != nil {
			return 0, err
		}
	}
	if wire > cap(lw.buf) {
		// Larger than the whole buffer: seal in place and write it alone.
		n, err := send.seal(f.b[frameHeaderLen:], f.n)
		if err != nil {
			return 0, err
		}
		binary.BigEndian.PutUint32(f.b[:frameHeaderLen], uint32(n))
		if _, err := lw.w.Write(f.b[:frameHeaderLen+n]); err != nil {
			return 0, err
		}
		return frameHeaderLen + n, nil
	}
	start := len(lw.buf)
	body := lw.buf[start+frameHeaderLen : start+frameHeaderLen]
	n, err := send.sealTo(body, f.envelope())
	if err != nil {
		return 0, err
	}
	binary.BigEndian.PutUint32(lw.buf[start:start+frameHeaderLen], uint32(n))
	lw.buf = lw.buf[:start+frameHeaderLen+n]
	return frameHeaderLen + n, nil
}

// readFrameBody reads the n-byte (sealed) body that follows a length
// prefix into a pooled frame and opens it. Encrypted bodies that fit the
// read buffer are opened straight out of it, which saves a copy per frame.
// On error f has been returned to the pool.
func readFrameBody(br *bufio.Reader, recv *cipherState, pool *bufPool, n int) (*frameBuf, error) {
	f := pool.get(n)
	if recv != nil && n <= br.Size() {
		sealed, err := br.Peek(n)
		if err != nil {
			pool.put(f)
			return nil, err
		}
		plain, err := recv.openTo(f.b[frameHeaderLen:frameHeaderLen], sealed)
		if err != nil {
			pool.put(f)
			return nil, err
		}
		if _, err := br.Discard(n); err != nil {
			pool.put(f)
			return nil, fmt.Errorf("mesh: read: %w", err)
		}
		f.n = plain
		return f, nil
	}
	if _, err := io.ReadFull(br, f.b[frameHeaderLen:frameHeaderLen+n]); err != nil {
		pool.put(f)
		return nil, err
	}
	plain, err := recv.open(f.b[frameHeaderLen:], n)
	if err != nil {
		pool.put(f)
		return nil, err
	}
	f.n = plain
	return f, nil
}

// Batched records (protocol version 3, encrypted links only). Sealing
// costs a fixed amount per call besides the per-byte cost, which dominates
// for Raft-sized frames (heartbeats, small appends, acks): so the writer
// packs consecutive small frames into one sealed record. On the wire a
// record is a length prefix with batchRecordFlag set, then
// AEAD(u16 length ‖ envelope ‖ u16 length ‖ envelope ...). Frames larger
// than batchFrameMax still travel alone, sealed once each, as in version 2.
const (
	batchRecordFlag = 1 << 31
	batchFrameMax   = 1 << 10  // largest envelope packed into a record
	batchRecordMax  = 16 << 10 // largest record plaintext
	batchLenLen     = 2        // u16 length before each packed envelope
)

// batching reports whether frame f goes into a batched record.
func (lw *linkWriter) batching(send *cipherState, f *frameBuf) bool {
	return lw.batch && send != nil && f.n <= batchFrameMax
}

// appendToRecord packs f into the open record, opening one if needed. It
// returns the wire bytes attributed to f (a new record's prefix and tag
// count towards its first frame).
func (lw *linkWriter) appendToRecord(send *cipherState, f *frameBuf) (int, error) {
	need := batchLenLen + f.n
	if lw.recStart >= 0 && len(lw.buf)-lw.recStart-frameHeaderLen+need > batchRecordMax {
		if err := lw.closeRecord(send); err != nil {
			return 0, err
		}
	}
	wire := need
	if lw.recStart < 0 {
		if frameHeaderLen+batchRecordMax+aeadTagLen > cap(lw.buf)-len(lw.buf) {
			if err := lw.Flush(); err != nil {
				return 0, err
			}
		}
		lw.recStart = len(lw.buf)
		lw.recSend = send
		lw.buf = lw.buf[:lw.recStart+frameHeaderLen]
		wire += frameHeaderLen + aeadTagLen
	}
	lw.buf = binary.BigEndian.AppendUint16(lw.buf, uint16(f.n))
	lw.buf = append(lw.buf, f.envelope()...)
	return wire, nil
}

// closeRecord seals the open record in place, if there is one.
func (lw *linkWriter) closeRecord(send *cipherState) error {
	if lw.recStart < 0 {
		return nil
	}
	start := lw.recStart
	lw.recStart = -1
	plain := len(lw.buf) - start - frameHeaderLen
	n, err := send.seal(lw.buf[start+frameHeaderLen:cap(lw.buf)], plain)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(lw.buf[start:], uint32(n)|batchRecordFlag)
	lw.buf = lw.buf[:start+frameHeaderLen+n]
	return nil
}

// linkReader yields the frames of one connection's byte stream: single
// frames, and the frames packed in batched records, one at a time.
type linkReader struct {
	br      *bufio.Reader
	recv    *cipherState
	pool    *bufPool
	limit   int  // largest sealed single frame
	batchOK bool // the peer may send batched records
	hdr     [frameHeaderLen]byte
	record  []byte // opened record plaintext
	rest    []byte // packed frames of record not yet returned
}

func newLinkReader(r io.Reader, recv *cipherState, pool *bufPool, limit int, batchOK bool) *linkReader {
	lr := &linkReader{br: bufio.NewReaderSize(r, linkReadBufSize), recv: recv, pool: pool, limit: limit, batchOK: batchOK && recv != nil}
	if lr.batchOK {
		lr.record = make([]byte, 0, batchRecordMax+aeadTagLen)
	}
	return lr
}

// pending reports whether next returns a frame without reading the stream.
func (lr *linkReader) pending() bool { return len(lr.rest) > 0 }

// next returns the next frame and the wire bytes it accounts for. The
// caller owns the frame.
func (lr *linkReader) next() (*frameBuf, int, error) {
	if len(lr.rest) > 0 {
		return lr.unpack()
	}
	if _, err := io.ReadFull(lr.br, lr.hdr[:]); err != nil {
		return nil, 0, err
	}
	v := binary.BigEndian.Uint32(lr.hdr[:])
	if v&batchRecordFlag == 0 {
		n, err := checkFrameLength(v, lr.limit)
		if err != nil {
			return nil, 0, err
		}
		f, err := readFrameBody(lr.br, lr.recv, lr.pool, n)
		return f, frameHeaderLen + n, err
	}
	if !lr.batchOK {
		return nil, 0, fmt.Errorf("mesh: batched record on a link that did not negotiate them")
	}
	n, err := checkFrameLength(v&^batchRecordFlag, batchRecordMax+aeadTagLen)
	if err != nil {
		return nil, 0, err
	}
	sealed, err := lr.br.Peek(n)
	if err != nil {
		return nil, 0, err
	}
	plain, err := lr.recv.openTo(lr.record[:0], sealed)
	if err != nil {
		return nil, 0, err
	}
	if _, err := lr.br.Discard(n); err != nil {
		return nil, 0, fmt.Errorf("mesh: read: %w", err)
	}
	if plain == 0 {
		return nil, 0, fmt.Errorf("mesh: empty batched record")
	}
	lr.rest = lr.record[:plain]
	f, wire, err := lr.unpack()
	return f, wire + frameHeaderLen + aeadTagLen, err
}

// unpack copies the next packed frame out of the open record.
func (lr *linkReader) unpack() (*frameBuf, int, error) {
	if len(lr.rest) < batchLenLen {
		lr.rest = nil
		return nil, 0, fmt.Errorf("mesh: truncated batched record")
	}
	n := int(binary.BigEndian.Uint16(lr.rest))
	if n == 0 || n > batchFrameMax || n > lr.limit || batchLenLen+n > len(lr.rest) {
		lr.rest = nil
		return nil, 0, fmt.Errorf("mesh: packed frame length %d out of range", n)
	}
	f := lr.pool.get(n)
	copy(f.b[frameHeaderLen:], lr.rest[batchLenLen:batchLenLen+n])
	lr.rest = lr.rest[batchLenLen+n:]
	return f, batchLenLen + n, nil
}
