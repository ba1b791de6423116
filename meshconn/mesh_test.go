package meshconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
	"github.com/meshetcd/meshetcd/mesh/meshtest"
)

// meshConfig is meshtest's router config, encrypted or plaintext.
func meshConfig(t testing.TB, name string, encrypted bool) mesh.Config {
	cfg := meshtest.Config(t, mesh.PeerName(name))
	cfg.ClusterLabel = "meshconn-test"
	if !encrypted {
		cfg.PSK, cfg.InsecurePlaintext = nil, true
	}
	return cfg
}

// memLine starts routers a, b, c on memnet with a-c cut, so a and c talk
// only through the relay b. It waits until a and c reach each other.
func memLine(t *testing.T) (nw *memnet.Network, a, b, c *mesh.Router) {
	t.Helper()
	nw = memnet.New()
	nw.Cut("a", "c")
	start := func(name string, seeds ...string) *mesh.Router {
		cfg := meshConfig(t, name, true)
		cfg.Transport = nw.Host(name)
		cfg.ListenAddr = name + ":7946"
		for _, s := range seeds {
			cfg.Seeds = append(cfg.Seeds, s+":7946")
		}
		r, err := mesh.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop() })
		return r
	}
	b = start("b")
	a = start("a", "b")
	c = start("c", "b")
	testutil.Eventually(t, 20*time.Second, "a and c reach each other via b", func() bool {
		return a.Reachable("c") && c.Reachable("a")
	})
	return nw, a, b, c
}

func TestPacketConnThroughRelay(t *testing.T) {
	_, a, _, c := memLine(t)
	pa, err := Listen(a, testPacketChannel, PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := Listen(c, testPacketChannel, PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	max := pa.MaxDatagramSize()
	sizes := []int{1, 100, 4096, 64 << 10, max}
	const count = 300
	go func() {
		for seq := uint32(0); seq < count; seq++ {
			d := testDatagram(seq, sizes[int(seq)%len(sizes)]+4)
			for {
				_, err := pa.WriteTo(d, MeshAddr{"c"})
				if !errors.Is(err, mesh.ErrQueueFull) {
					break
				}
				time.Sleep(time.Millisecond) // a full queue is the caller's to retry
			}
		}
	}()
	buf := make([]byte, pc.MaxDatagramSize())
	for seq := uint32(0); seq < count; seq++ {
		pc.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("ReadFrom %d: %v", seq, err)
		}
		want := testDatagram(seq, sizes[int(seq)%len(sizes)]+4)
		if from.String() != "mesh://a" || !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes from %v, want %d intact bytes in order (got seq %d)", seq, n, from, len(want), binary.BigEndian.Uint32(buf))
		}
	}
	// And back.
	if _, err := pc.WriteTo([]byte("pong"), MeshAddr{"a"}); err != nil {
		t.Fatal(err)
	}
	pa.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, from, err := pa.ReadFrom(buf); err != nil || string(buf[:n]) != "pong" || from.String() != "mesh://c" {
		t.Fatalf("reply: %q from %v, %v", buf[:n], from, err)
	}
	if _, err := pa.WriteTo([]byte("x"), MeshAddr{"nobody"}); !errors.Is(err, mesh.ErrNoRoute) {
		t.Fatalf("WriteTo unknown peer: %v", err)
	}
	if _, err := pa.WriteTo(make([]byte, max+1), MeshAddr{"c"}); !errors.Is(err, mesh.ErrTooLarge) {
		t.Fatalf("oversized WriteTo: %v", err)
	}
	pa.Close()
	pc.Close()
	checkNoLeaks(t)
}

// patternReader yields n pseudo-random bytes without holding them.
type patternReader struct {
	rng *rand.Rand
	n   int64
	buf [8]byte
	off int
}

func newPatternReader(seed uint64, n int64) *patternReader {
	return &patternReader{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), n: n, off: 8}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n)]
	for i := range p {
		if r.off == 8 {
			binary.LittleEndian.PutUint64(r.buf[:], r.rng.Uint64())
			r.off = 0
		}
		p[i] = r.buf[r.off]
		r.off++
	}
	r.n -= int64(len(p))
	return len(p), nil
}

// countingReader reports when n bytes have been read through it.
type countingReader struct {
	r       io.Reader
	read    atomic.Int64
	at      int64
	reached chan struct{}
	once    sync.Once
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.read.Add(int64(n)) >= c.at {
		c.once.Do(func() { close(c.reached) })
	}
	return n, err
}

// heapPeak samples HeapInuse until stop is closed and returns the peak.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

func TestBulk64MiBThroughRelayBoundedMemory(t *testing.T) {
	_, a, _, c := memLine(t)
	const size = 64 << 20
	got := make(chan received, 1)
	bc, err := NewBulk(c, testBulkChannel, BulkConfig{Handler: hashingHandler(got)})
	if err != nil {
		t.Fatal(err)
	}
	ba, err := NewBulk(a, testBulkChannel, BulkConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sent := sha256.New()
	body := io.TeeReader(newPatternReader(42, size), sent)

	// memnet copies every write (128 MiB of garbage here, not ours); a low
	// GC target keeps HeapInuse close to what is actually retained, which
	// is what must stay bounded.
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	peakc := heapPeak(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	err = ba.Send(ctx, "c", []byte("snapshot-meta"), body)
	took := time.Since(start)
	close(stop)
	peak := <-peakc
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-got
	if r.err != nil || r.n != size || string(r.meta) != "snapshot-meta" || !bytes.Equal(r.sum[:], sent.Sum(nil)) {
		t.Fatalf("receiver got %d bytes, meta %q, hash equal %v, err %v", r.n, r.meta, bytes.Equal(r.sum[:], sent.Sum(nil)), r.err)
	}
	delta := int64(peak) - int64(before.HeapInuse)
	t.Logf("64 MiB through a relay in %v (%.1f MB/s); HeapInuse %d MiB before, peak +%.1f MiB (GOGC=20); TotalAlloc +%d MiB (all three routers and memnet)",
		took, size/took.Seconds()/1e6, before.HeapInuse>>20, float64(delta)/(1<<20), (after.TotalAlloc-before.TotalAlloc)>>20)
	if delta > 16<<20 {
		t.Fatalf("heap grew by %.1f MiB while moving 64 MiB; want < 16 MiB", float64(delta)/(1<<20))
	}
	ba.Close()
	bc.Close()
	checkNoLeaks(t)
}

func TestBulkFailsWhenReceiverDies(t *testing.T) {
	for _, how := range []string{"router-stops", "link-blackholed"} {
		t.Run(how, func(t *testing.T) {
			nw, a, _, c := memLine(t)
			got := make(chan received, 1)
			bc, err := NewBulk(c, testBulkChannel, BulkConfig{Handler: hashingHandler(got), IdleTimeout: 5 * time.Second, NoRouteGrace: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer bc.Close()
			ba, err := NewBulk(a, testBulkChannel, BulkConfig{IdleTimeout: 5 * time.Second, NoRouteGrace: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer ba.Close()
			body := &countingReader{r: newPatternReader(7, 64<<20), at: 8 << 20, reached: make(chan struct{})}
			errc := make(chan error, 1)
			go func() { errc <- ba.Send(context.Background(), "c", nil, body) }()
			select {
			case <-body.reached:
			case err := <-errc:
				t.Fatalf("Send ended before the receiver died: %v", err)
			}
			died := time.Now()
			if how == "router-stops" {
				if err := c.Stop(); err != nil {
					t.Fatal(err)
				}
			} else {
				nw.Blackhole("b", "c") // silent: no reset, the mesh must time the link out
			}
			select {
			case err := <-errc:
				if err == nil {
					t.Fatal("Send returned nil although the receiver died half way")
				}
				t.Logf("Send failed %v after the receiver died, %d MiB read: %v", time.Since(died), body.read.Load()>>20, err)
			case <-time.After(20 * time.Second):
				t.Fatal("Send did not fail within 20 s of the receiver dying")
			}
			// The receiving side, cut off, gives up too: its handler's Body fails.
			select {
			case r := <-got:
				if r.err == nil {
					t.Fatal("the receiver's handler saw a complete body")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the receiver did not abort its side within 20 s")
			}
		})
	}
}

// Whole writes lost on the relay's outgoing link corrupt the TCP stream;
// the mesh must notice and reconnect, and every datagram that does arrive
// must be intact and unique.
func TestPacketConnThroughLossyRelay(t *testing.T) {
	nw, a, _, c := memLine(t)
	pa, err := Listen(a, testPacketChannel, PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pc, err := Listen(c, testPacketChannel, PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	nw.SetDropRate("b", "c", 0.02)
	const count = 2000
	max := 8 << 10
	go func() {
		for seq := uint32(0); seq < count; seq++ {
			pa.WriteTo(testDatagram(seq, max), MeshAddr{"c"}) // errors are loss
			if seq%50 == 0 {
				time.Sleep(5 * time.Millisecond) // spread over reconnects
			}
		}
	}()
	seen := map[uint32]bool{}
	buf := make([]byte, pc.MaxDatagramSize())
	for {
		pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		seq := binary.BigEndian.Uint32(buf)
		if !bytes.Equal(buf[:n], testDatagram(seq, max)) {
			t.Fatalf("datagram %d arrived damaged", seq)
		}
		if seen[seq] {
			t.Fatalf("datagram %d arrived twice", seq)
		}
		seen[seq] = true
	}
	t.Logf("%d of %d datagrams arrived through a lossy relay link", len(seen), count)
	if len(seen) == 0 {
		t.Fatal("nothing arrived")
	}
}

// The same lossy link under a bulk transfer: connections reset, chunks
// are lost, and the transfer still completes intact.
func TestBulkThroughLossyRelay(t *testing.T) {
	nw, a, _, c := memLine(t)
	got := make(chan received, 1)
	cfg := BulkConfig{Handler: hashingHandler(got), ChunkSize: 32 << 10, RetransmitTimeout: 100 * time.Millisecond, NoRouteGrace: 10 * time.Second}
	bc, err := NewBulk(c, testBulkChannel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	cfg.Handler = nil
	ba, err := NewBulk(a, testBulkChannel, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	nw.SetDropRate("b", "c", 0.05)
	body := randomBytes(11, 4<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	if err := ba.Send(ctx, "c", []byte("m"), bytes.NewReader(body)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-got
	if r.err != nil || r.sum != sha256.Sum256(body) {
		t.Fatalf("received %d bytes, hash equal %v, err %v", r.n, r.sum == sha256.Sum256(body), r.err)
	}
	st := ba.Stats()
	t.Logf("4 MiB through a lossy relay link in %v; sender %+v", time.Since(start), st)
	if st.Rewinds == 0 {
		t.Fatal("no chunk was ever resent: the lossy link did not bite")
	}
}
