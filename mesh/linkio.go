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
	w   io.Writer
	buf []byte // pending output; cap is the flush threshold
}

func newLinkWriter(w io.Writer, size int) *linkWriter {
	return &linkWriter{w: w, buf: make([]byte, 0, size)}
}

// Buffered is the number of bytes waiting for Flush.
func (lw *linkWriter) Buffered() int { return len(lw.buf) }

// Flush writes the pending bytes.
func (lw *linkWriter) Flush() error {
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
