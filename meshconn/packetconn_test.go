package meshconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
)

const testChan mesh.ChannelID = 40

func newFakePair(t *testing.T, cfg PacketConfig) (*fakeNet, *PacketConn, *PacketConn) {
	t.Helper()
	n := newFakeNet(t, 8<<10)
	a, err := newPacketConn("a", n.opener("a", testChan), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newPacketConn("b", n.opener("b", testChan), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return n, a, b
}

// testDatagram is datagram seq: its seq, then bytes derived from seq, of a
// length derived from seq, so any damage or mix-up is visible.
func testDatagram(seq uint32, maxLen int) []byte {
	n := 4 + int(seq*7919)%(maxLen-4)
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b, seq)
	for i := 4; i < n; i++ {
		b[i] = byte(seq) ^ byte(i*31)
	}
	return b
}

func TestPacketConnIntactOrNotAtAll(t *testing.T) {
	n, a, b := newFakePair(t, PacketConfig{})
	n.setFaults(0.1, 0.1, 0.1, 0.1)
	const count = 3000
	max := a.MaxDatagramSize()
	var sendErrs int
	for seq := uint32(0); seq < count; seq++ {
		if _, err := a.WriteTo(testDatagram(seq, max), MeshAddr{"b"}); err != nil {
			sendErrs++ // queue full is allowed; nothing else
			if !errors.Is(err, mesh.ErrQueueFull) {
				t.Fatalf("WriteTo: %v", err)
			}
		}
	}
	n.setFaults(0, 0, 0, 0)
	// An undamaged marker flushes anything held back for reordering; the
	// receiver may still be draining a full queue.
	testutil.Eventually(t, 10*time.Second, "the end marker to be queued", func() bool {
		_, err := a.WriteTo([]byte("end-marker"), MeshAddr{"b"})
		if err != nil && !errors.Is(err, mesh.ErrQueueFull) {
			t.Fatal(err)
		}
		return err == nil
	})
	seen := make(map[uint32]bool)
	marker := false
	buf := make([]byte, b.MaxDatagramSize())
	for {
		// Everything is in flight already; once the marker is in, a
		// short quiet spell means the rest arrived or was lost.
		wait := 10 * time.Second
		if marker {
			wait = 300 * time.Millisecond
		}
		b.SetReadDeadline(time.Now().Add(wait))
		nr, from, err := b.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && marker {
			break
		}
		if err != nil {
			t.Fatalf("ReadFrom after %d datagrams: %v", len(seen), err)
		}
		if from.String() != "mesh://a" {
			t.Fatalf("from %v", from)
		}
		if string(buf[:nr]) == "end-marker" {
			marker = true
			continue
		}
		seq := binary.BigEndian.Uint32(buf)
		if want := testDatagram(seq, max); !bytes.Equal(buf[:nr], want) {
			t.Fatalf("datagram %d damaged: %d bytes, want %d", seq, nr, len(want))
		}
		if seen[seq] {
			t.Fatalf("datagram %d delivered twice", seq)
		}
		seen[seq] = true
	}
	st := b.Stats()
	t.Logf("sent %d, send errors %d, received %d intact, %d malformed dropped", count, sendErrs, len(seen), st.Malformed)
	// About 30% is damaged or lost on purpose; half of what the mesh
	// accepted must come through.
	if st.Malformed == 0 || len(seen) < (count-sendErrs)/2 {
		t.Fatalf("fault injection did not bite or too much was lost: %+v, %d intact", st, len(seen))
	}
}

func TestPacketConnFIFO(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	const count = 1000
	for seq := uint32(0); seq < count; seq++ {
		if _, err := a.WriteTo(testDatagram(seq, 200), MeshAddr{"b"}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 256)
	for seq := uint32(0); seq < count; seq++ {
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(buf[:n]); got != seq {
			t.Fatalf("got datagram %d, want %d", got, seq)
		}
	}
}

func TestPacketConnReadDeadline(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	buf := make([]byte, 64)

	start := time.Now()
	b.SetReadDeadline(start.Add(50 * time.Millisecond))
	_, _, err := b.ReadFrom(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past deadline: %v; want a timeout", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("deadline fired early, after %v", el)
	}

	// An expired deadline wins over queued data, as on a socket.
	a.WriteTo([]byte("x"), MeshAddr{"b"})
	testutil.Eventually(t, 5*time.Second, "datagram queued", func() bool { return b.Stats().Received == 1 })
	if _, _, err := b.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom with expired deadline: %v", err)
	}
	// Clearing it lets the read through.
	b.SetReadDeadline(time.Time{})
	if n, _, err := b.ReadFrom(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("ReadFrom after clearing the deadline: %q, %v", buf[:n], err)
	}

	// Moving the deadline into the past unblocks a waiting reader.
	b.SetDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() { _, _, err := b.ReadFrom(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	b.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked reader got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving the deadline did not unblock the reader")
	}
	if err := a.SetWriteDeadline(time.Now()); err != nil {
		t.Fatalf("SetWriteDeadline: %v", err)
	}
	if _, err := a.WriteTo([]byte("y"), MeshAddr{"b"}); err != nil {
		t.Fatalf("WriteTo after a past write deadline: %v", err)
	}
}

func TestPacketConnCloseUnblocksReaders(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := b.ReadFrom(make([]byte, 8))
			errs <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
			t.Fatalf("reader got %v; want net.ErrClosed", err)
		}
	}
	if _, err := b.WriteTo([]byte("x"), MeshAddr{"a"}); !errors.Is(err, mesh.ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
	if err := b.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetReadDeadline after Close: %v", err)
	}
	a.Close()
	checkNoLeaks(t)
}

// stubChannel fails every Send with err.
type stubChannel struct{ err error }

func (s stubChannel) Send(mesh.PeerName, []byte) error                   { return s.err }
func (s stubChannel) SendWithHeader(mesh.PeerName, []byte, []byte) error { return s.err }
func (s stubChannel) MaxPayload() int                                    { return 1000 }

func TestPacketConnWriteErrors(t *testing.T) {
	for _, want := range []error{mesh.ErrNoRoute, mesh.ErrQueueFull, mesh.ErrTooLarge, mesh.ErrClosed} {
		c, err := newPacketConn("a", func(mesh.DatagramHandler) (channel, error) { return stubChannel{want}, nil }, PacketConfig{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.WriteTo([]byte("hello"), MeshAddr{"b"})
		if n != 0 || !errors.Is(err, want) {
			t.Errorf("WriteTo with the mesh failing %v: %d, %v", want, n, err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" || oe.Addr.String() != "mesh://b" {
			t.Errorf("WriteTo error %#v is not a write *net.OpError for mesh://b", err)
		}
		c.Close()
	}

	n, a, _ := newFakePair(t, PacketConfig{})
	if _, err := a.WriteTo(make([]byte, a.MaxDatagramSize()+1), MeshAddr{"b"}); !errors.Is(err, mesh.ErrTooLarge) {
		t.Errorf("oversized WriteTo: %v", err)
	}
	if nw, err := a.WriteTo(make([]byte, a.MaxDatagramSize()), MeshAddr{"b"}); err != nil || nw != a.MaxDatagramSize() {
		t.Errorf("largest WriteTo: %d, %v", nw, err)
	}
	if _, err := a.WriteTo([]byte("x"), MeshAddr{"nobody"}); !errors.Is(err, mesh.ErrNoRoute) {
		t.Errorf("WriteTo unknown peer: %v", err)
	}
	n.setCut("a", "b", true)
	if _, err := a.WriteTo([]byte("x"), &MeshAddr{"b"}); !errors.Is(err, mesh.ErrNoRoute) {
		t.Errorf("WriteTo across a cut: %v", err)
	}
	if _, err := a.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); !errors.Is(err, ErrBadAddr) {
		t.Errorf("WriteTo a UDP address: %v", err)
	}
}

func TestPacketConnShortBuffer(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	msg := []byte("0123456789abcdef")
	a.WriteTo(msg, MeshAddr{"b"})
	buf := make([]byte, 10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := b.ReadFrom(buf)
	if n != 10 || !bytes.Equal(buf, msg[:10]) || from.String() != "mesh://a" {
		t.Fatalf("short read: %d %q from %v", n, buf[:n], from)
	}
	if !errors.Is(err, ErrShortBuffer) || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("short read error %v; want ErrShortBuffer", err)
	}
}

func TestPacketConnDropsNewestWhenFull(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{QueueLen: 4})
	for seq := uint32(0); seq < 10; seq++ {
		if _, err := a.WriteTo(testDatagram(seq, 50), MeshAddr{"b"}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "all datagrams handled", func() bool {
		st := b.Stats()
		return st.Received+st.Dropped == 10
	})
	if st := b.Stats(); st.Received != 4 || st.Dropped != 6 {
		t.Fatalf("stats %+v; want 4 received, 6 dropped", st)
	}
	buf := make([]byte, 64)
	for seq := uint32(0); seq < 4; seq++ {
		n, _, err := b.ReadFrom(buf)
		if err != nil || binary.BigEndian.Uint32(buf[:n]) != seq {
			t.Fatalf("read %d: %v; want the oldest datagrams kept", seq, err)
		}
	}
}

func TestPacketConnLoopback(t *testing.T) {
	_, a, _ := newFakePair(t, PacketConfig{})
	if _, err := a.WriteTo([]byte("self"), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := a.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "self" || from.String() != "mesh://a" {
		t.Fatalf("loopback: %q from %v, %v", buf[:n], from, err)
	}
	if a.LocalAddr().String() != "mesh://a" || a.LocalAddr().Network() != "mesh" {
		t.Fatalf("LocalAddr %v", a.LocalAddr())
	}
}

func TestPacketConnReadPacketNeverTruncates(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	small, large := []byte("0123"), bytes.Repeat([]byte("x"), 3000)
	for _, m := range [][]byte{small, large, small} {
		if _, err := a.WriteTo(m, MeshAddr{"b"}); err != nil {
			t.Fatal(err)
		}
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 0, 8)
	for i, want := range [][]byte{small, large, small} {
		d, from, err := b.ReadPacket(buf)
		if err != nil || !bytes.Equal(d, want) || from.String() != "mesh://a" {
			t.Fatalf("read %d: %d bytes from %v, %v; want %d bytes", i, len(d), from, err, len(want))
		}
		buf = d
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := b.ReadPacket(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("empty queue: %v; want a timeout", err)
	}
	b.SetReadDeadline(time.Time{})
	b.Close()
	if _, _, err := b.ReadPacket(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v; want ErrClosed", err)
	}
}

// ReadPacketFunc hands each datagram over in order, whatever its size, and
// fails without calling fn on a timeout or after Close.
func TestPacketConnReadPacketFunc(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	small, large := []byte("0123"), bytes.Repeat([]byte("y"), a.MaxDatagramSize())
	msgs := [][]byte{small, large, small, large}
	for _, m := range msgs {
		if _, err := a.WriteTo(m, MeshAddr{"b"}); err != nil {
			t.Fatal(err)
		}
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, want := range msgs {
		var got []byte
		var from net.Addr
		if err := b.ReadPacketFunc(func(d []byte, src net.Addr) { got, from = bytes.Clone(d), src }); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(got, want) || from.String() != "mesh://a" {
			t.Fatalf("read %d: %d bytes from %v; want %d", i, len(got), from, len(want))
		}
	}
	called := false
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if err := b.ReadPacketFunc(func([]byte, net.Addr) { called = true }); !errors.Is(err, os.ErrDeadlineExceeded) || called {
		t.Fatalf("empty queue: %v (fn called: %v); want a timeout", err, called)
	}
	b.SetReadDeadline(time.Time{})
	b.Close()
	if err := b.ReadPacketFunc(func([]byte, net.Addr) { called = true }); !errors.Is(err, net.ErrClosed) || called {
		t.Fatalf("after Close: %v (fn called: %v); want ErrClosed", err, called)
	}
}

// Readers blocked in ReadFrom together all get the datagrams that arrive.
func TestPacketConnConcurrentReaders(t *testing.T) {
	_, a, b := newFakePair(t, PacketConfig{})
	const readers, count = 4, 400
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				if _, _, err := b.ReadFrom(buf); err != nil {
					return
				}
				mu.Lock()
				got++
				done := got == count
				mu.Unlock()
				if done {
					b.Close()
				}
			}
		}()
	}
	for seq := uint32(0); seq < count; seq++ {
		if _, err := a.WriteTo(testDatagram(seq, 50), MeshAddr{"b"}); err != nil {
			t.Fatal(err)
		}
		if seq%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	if got != count || b.Stats().Dropped != 0 {
		t.Fatalf("read %d of %d (stats %+v)", got, count, b.Stats())
	}
}
