package memnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func pair(t *testing.T, nw *Network) (client, server net.Conn) {
	t.Helper()
	l, err := nw.Host("srv").Listen("srv:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	client, err = nw.Host("cli").Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestEchoAndClose(t *testing.T) {
	c, s := pair(t, New())
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	if _, err := s.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
}

func TestDeadlinesAreTimeouts(t *testing.T) {
	c, _ := pair(t, New(WithBufferSize(16)))
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	// A writer whose peer does not read blocks at the buffer size.
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := c.Write(make([]byte, 100))
	if n != 16 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write into a full buffer: n=%d err=%v", n, err)
	}
}

func TestCutResetsAndRefuses(t *testing.T) {
	nw := New()
	c, s := pair(t, nw)
	nw.Cut("cli", "srv")
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("read on cut link: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrReset) {
		t.Fatalf("write on cut link: %v", err)
	}
	l, err := nw.Host("srv").Listen("srv:99")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := nw.Host("cli").Dial(context.Background(), "srv:99"); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial across a cut: %v", err)
	}
	nw.Heal("cli", "srv")
	nc, err := nw.Host("cli").Dial(context.Background(), "srv:99")
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	nc.Close()
}

func TestBlackholeHoldsDataUntilHeal(t *testing.T) {
	nw := New()
	c, s := pair(t, nw)
	nw.Blackhole("cli", "srv")
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("data crossed a blackhole: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := nw.Host("cli").Dial(ctx, s.LocalAddr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial into a blackhole: %v", err)
	}
	nw.Heal("cli", "srv")
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after heal: %q, %v", buf, err)
	}
}

func TestDelayDropAndStall(t *testing.T) {
	nw := New(WithSeed(1))
	c, s := pair(t, nw)
	nw.SetDelay("cli", "srv", 100*time.Millisecond)
	start := time.Now()
	_, _ = c.Write([]byte("d"))
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("delayed data arrived after %v", d)
	}
	nw.SetDelay("cli", "srv", 0)

	nw.SetDropRate("cli", "srv", 1)
	_, _ = c.Write([]byte("lost"))
	nw.SetDropRate("cli", "srv", 0)
	_, _ = c.Write([]byte("kept"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "kept" {
		t.Fatalf("got %q, %v", buf, err)
	}

	nw.StallReads("srv", true)
	_, _ = c.Write([]byte("s"))
	_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled reader read: %v", err)
	}
	nw.StallReads("srv", false)
	_ = s.SetReadDeadline(time.Time{})
	if n, err := s.Read(buf); err != nil || !bytes.Equal(buf[:n], []byte("s")) {
		t.Fatalf("after unstall: %q, %v", buf[:n], err)
	}

	nw.SetReadRate("srv", 1000) // ~10 bytes per read, ~10 ms each
	_, _ = c.Write(make([]byte, 50))
	start = time.Now()
	if _, err := io.ReadFull(s, make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("slow reader read 50 bytes at 1000 B/s in %v", d)
	}
}

// BenchmarkStream measures a write/read round through one connection
// direction; steady state allocates nothing per write.
func BenchmarkStream(b *testing.B) {
	nw := New()
	l, _ := nw.Host("srv").Listen("srv:1")
	defer l.Close()
	c, _ := nw.Host("cli").Dial(context.Background(), "srv:1")
	s, _ := l.Accept()
	defer c.Close()
	defer s.Close()
	msg := make([]byte, 1024)
	buf := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			b.Fatal(err)
		}
	}
}
