package memnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// readWithin reads exactly len(want) bytes within d and reports how long it
// took; it fails the test on a timeout or wrong data.
func readWithin(t *testing.T, c interface {
	io.Reader
	SetReadDeadline(time.Time) error
}, want []byte, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	return time.Since(start)
}

func TestLossDelaysButNeverCorrupts(t *testing.T) {
	for _, p := range []float64{0.1, 0.3, 0.5} {
		nw := New(WithSeed(7))
		c, s := pair(t, nw)
		nw.SetLoss("cli", "srv", p)
		const writes = 60
		var want []byte
		start := time.Now()
		for i := range writes {
			b := []byte{byte(i)}
			want = append(want, b...)
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		_ = readWithin(t, s, want, 30*time.Second)
		took := time.Since(start)
		// At least one of 60 writes is lost at p ≥ 0.1 (seeded), so the
		// stream is held back at least one retransmission timeout.
		if took < LossRTO {
			t.Errorf("loss %.0f%%: 60 writes arrived in %v, want ≥ one RTO (%v)", p*100, took, LossRTO)
		}
		// The reverse direction is clean.
		if _, err := s.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		if d := readWithin(t, c, []byte("ok"), time.Second); d > 100*time.Millisecond {
			t.Errorf("loss %.0f%%: clean direction took %v", p*100, d)
		}
	}
}

func TestDelayWithJitterStaysInRangeAndInOrder(t *testing.T) {
	nw := New(WithSeed(3))
	c, s := pair(t, nw)
	nw.SetDelay("cli", "srv", 50*time.Millisecond)
	nw.SetJitter("cli", "srv", 250*time.Millisecond)
	for i := range 5 {
		msg := []byte{'a' + byte(i)}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		d := readWithin(t, s, msg, 2*time.Second)
		if d < 45*time.Millisecond || d > 400*time.Millisecond {
			t.Errorf("write %d took %v, want 50–300 ms", i, d)
		}
	}
	// Many writes at once still arrive in order.
	var want []byte
	for i := range 50 {
		want = append(want, byte(i))
		_, _ = c.Write([]byte{byte(i)})
	}
	readWithin(t, s, want, 2*time.Second)
}

func TestOneWayDropsOneDirectionOnly(t *testing.T) {
	nw := New()
	c, s := pair(t, nw)
	nw.SetOneWay("cli", "srv", true)
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dropped direction delivered: %v", err)
	}
	if _, err := s.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	readWithin(t, c, []byte("back"), time.Second)
	// A handshake needs both directions: new dials hang.
	l, err := nw.Host("srv").Listen("srv:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := nw.Host("cli").Dial(ctx, l.Addr().String()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial over a one-way link: %v, want it to hang", err)
	}
	nw.SetOneWay("cli", "srv", false)
	readWithin(t, s, []byte("lost"), time.Second)
}

func TestFlapGoesDownAndUpUntilHealed(t *testing.T) {
	nw := New(WithSeed(5))
	c, s := pair(t, nw)
	nw.Flap("cli", "srv", 40*time.Millisecond, 60*time.Millisecond)
	// Probe every 5 ms: some probes are held (down), and all arrive.
	var held, fast int
	for i := range 40 {
		msg := []byte{byte(i)}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if d := readWithin(t, s, msg, 2*time.Second); d > 20*time.Millisecond {
			held++
		} else {
			fast++
		}
		time.Sleep(5 * time.Millisecond)
	}
	if held == 0 || fast == 0 {
		t.Fatalf("flapping link: %d probes held, %d fast; want both", held, fast)
	}
	nw.HealAll()
	for i := range 10 {
		msg := []byte{byte(i)}
		_, _ = c.Write(msg)
		if d := readWithin(t, s, msg, time.Second); d > 20*time.Millisecond {
			t.Fatalf("after HealAll a probe took %v", d)
		}
	}
}

func TestBandwidthPacesTheDirection(t *testing.T) {
	nw := New()
	c, s := pair(t, nw)
	nw.SetBandwidth("cli", "srv", 20_000) // 20 kB/s
	data := bytes.Repeat([]byte("x"), 10_000)
	go func() { _, _ = c.Write(data) }()
	if d := readWithin(t, s, data, 5*time.Second); d < 400*time.Millisecond || d > 2*time.Second {
		t.Fatalf("10 kB at 20 kB/s took %v, want about 500 ms", d)
	}
}
