package meshconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/meshetcd/meshetcd/internal/pki"
	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/meshtest"
)

// Benchmarks run over real routers on loopback TCP. Report them with the
// machine's load: on a shared 2-core box the numbers move a lot.

// denyTransport is TCP that refuses to dial some addresses, to force a
// line topology (a and c may talk only through b).
type denyTransport struct {
	mesh.TCPTransport
	mu   sync.Mutex
	deny map[string]bool
}

func (d *denyTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	denied := d.deny[addr]
	d.mu.Unlock()
	if denied {
		return nil, errors.New("dial refused to force a line topology")
	}
	return d.TCPTransport.Dial(ctx, addr)
}

func (d *denyTransport) refuse(addr string) {
	d.mu.Lock()
	d.deny[addr] = true
	d.mu.Unlock()
}

// tcpRouters starts a and b on loopback TCP (and c behind b when relay)
// and returns the two ends: a and b, or a and c.
func tcpRouters(tb testing.TB, relay, encrypted bool, tweak func(*mesh.Config)) (src, dst *mesh.Router) {
	tb.Helper()
	start := func(name string, tr *denyTransport, seeds ...string) *mesh.Router {
		cfg := meshConfig(tb, name, encrypted)
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.Transport = tr
		cfg.Seeds = seeds
		if tweak != nil {
			tweak(&cfg)
		}
		r, err := mesh.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { r.Stop() })
		return r
	}
	newTr := func() *denyTransport { return &denyTransport{deny: map[string]bool{}} }
	b := start("b", newTr())
	if !relay {
		a := start("a", newTr(), b.ListenAddr())
		testutil.Eventually(tb, 20*time.Second, "a reaches b", func() bool { return a.Reachable("b") && b.Reachable("a") })
		return a, b
	}
	ta, tc := newTr(), newTr()
	c := start("c", tc, b.ListenAddr())
	ta.refuse(c.ListenAddr())
	a := start("a", ta, b.ListenAddr())
	tc.refuse(a.ListenAddr())
	testutil.Eventually(tb, 20*time.Second, "a reaches c", func() bool { return a.Reachable("c") && c.Reachable("a") })
	return a, c
}

// echo answers every datagram on pc until it is closed.
func echo(pc *PacketConn) {
	buf := make([]byte, pc.MaxDatagramSize())
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pc.WriteTo(buf[:n], from)
	}
}

func benchTopologies(b *testing.B, run func(b *testing.B, src, dst *mesh.Router)) {
	for _, relay := range []bool{false, true} {
		for _, enc := range []bool{false, true} {
			name := map[bool]string{false: "direct", true: "relay"}[relay] + "/" + map[bool]string{false: "plain", true: "encrypted"}[enc]
			b.Run(name, func(b *testing.B) {
				src, dst := tcpRouters(b, relay, enc, nil)
				run(b, src, dst)
			})
		}
	}
}

var benchSizes = []int{100, 4096}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkDatagramRTT: one datagram out, the echo back, one at a time.
func BenchmarkDatagramRTT(b *testing.B) {
	benchTopologies(b, func(b *testing.B, src, dst *mesh.Router) {
		ps, to, closeFn := echoPair(b, src, dst)
		defer closeFn()
		for _, size := range benchSizes {
			b.Run(sizeName(size), func(b *testing.B) { benchRTT(b, ps, to, size) })
		}
	})
}

// BenchmarkDatagramRTTUnderBulk: the same 100-byte round trip while a bulk
// transfer saturates the same links (direct and relayed, encrypted), to
// check that the mesh's priority classes keep Raft traffic ahead, at the
// default bulk rate and with the rate lifted. bulk-MB/s is what the bulk
// stream moved meanwhile: the two figures trade against each other.
func BenchmarkDatagramRTTUnderBulk(b *testing.B) {
	for _, relay := range []bool{false, true} {
		for _, rate := range []int{0, 1 << 40} {
			name := map[bool]string{false: "direct", true: "relay"}[relay] + "/" + map[bool]string{false: "rate-default", true: "rate-unlimited"}[rate != 0]
			b.Run(name, func(b *testing.B) {
				src, dst := tcpRouters(b, relay, true, func(c *mesh.Config) { c.BulkRate = rate })
				rttUnderBulk(b, src, dst)
			})
		}
	}
}

func rttUnderBulk(b *testing.B, src, dst *mesh.Router) {
	bs, err := NewBulk(src, testBulkChannel, BulkConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	var moved atomic.Int64
	bd, err := NewBulk(dst, testBulkChannel, BulkConfig{Handler: func(ctx context.Context, in *Incoming) error {
		n, err := io.Copy(io.Discard, in.Body)
		moved.Add(n)
		return err
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer bd.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			bs.Send(ctx, dst.Name(), nil, io.LimitReader(zeroReader{}, 16<<20))
		}
	}()
	ps, to, closeFn := echoPair(b, src, dst)
	defer closeFn()
	time.Sleep(100 * time.Millisecond) // let the bulk stream fill the pipes
	b.Run("100B", func(b *testing.B) {
		before, t0 := moved.Load(), time.Now()
		benchRTT(b, ps, to, 100)
		b.ReportMetric(float64(moved.Load()-before)/time.Since(t0).Seconds()/1e6, "bulk-MB/s")
	})
	cancel()
	wg.Wait()
}

// echoPair opens PacketConns on src and dst, dst echoing; close them with
// the returned func. A channel id can be opened once per router.
func echoPair(b *testing.B, src, dst *mesh.Router) (ps *PacketConn, to MeshAddr, closeFn func()) {
	ps, err := Listen(src, testPacketChannel, PacketConfig{})
	if err != nil {
		b.Fatal(err)
	}
	pd, err := Listen(dst, testPacketChannel, PacketConfig{})
	if err != nil {
		b.Fatal(err)
	}
	go echo(pd)
	return ps, MeshAddr{dst.Name()}, func() { ps.Close(); pd.Close() }
}

func benchRTT(b *testing.B, ps *PacketConn, to MeshAddr, size int) {
	msg := make([]byte, size)
	buf := make([]byte, ps.MaxDatagramSize())
	rtts := make([]time.Duration, 0, b.N)
	lost := 0
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := ps.WriteTo(msg, to); err != nil {
			b.Fatal(err)
		}
		ps.SetReadDeadline(t0.Add(time.Second))
		if _, _, err := ps.ReadFrom(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				lost++
				continue
			}
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	b.StopTimer()
	if len(rtts) == 0 {
		b.Fatal("every datagram was lost")
	}
	slices.Sort(rtts)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/op")
	b.ReportMetric(float64(rtts[len(rtts)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}

// BenchmarkDatagramThroughput: one sender, one reader, at most 512
// datagrams in flight (the reader reports its count every 64, as Raft's
// MaxInflightMsgs bounds a pipeline); MB/s counts what arrived, cpu-µs/op
// the process's CPU time per datagram (both ends). A window that stalls
// for 200 ms is written off as lost and reopened.
func BenchmarkDatagramThroughput(b *testing.B) {
	benchTopologies(b, datagramThroughput)
}

// BenchmarkLinkSecurity compares Raft-sized datagram throughput over one
// direct loopback link protected by mutual X.509 TLS (the mesh framing in
// plaintext inside it), by the mesh secret (AES-256-GCM), by both, and
// with no protection.
func BenchmarkLinkSecurity(b *testing.B) {
	tc := benchTLSConfig(b)
	for _, mode := range []struct {
		name  string
		tweak func(*mesh.Config)
	}{
		{"plaintext", nil},
		{"psk", func(c *mesh.Config) { c.InsecurePlaintext, c.PSK = false, meshtest.PSK }},
		{"tls", func(c *mesh.Config) { c.InsecurePlaintext, c.TLS = false, tc }},
		{"tls+psk", func(c *mesh.Config) { c.InsecurePlaintext, c.TLS, c.PSK = false, tc, meshtest.PSK }},
	} {
		b.Run(mode.name, func(b *testing.B) {
			src, dst := tcpRouters(b, false, false, mode.tweak)
			datagramThroughput(b, src, dst)
		})
	}
}

// benchTLSConfig issues a 127.0.0.1 certificate that both routers use.
func benchTLSConfig(b *testing.B) *mesh.TLSConfig {
	ca, err := pki.NewCA("bench-ca", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	iss, err := ca.Issue(pki.Request{CommonName: "member", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cert, key, err := iss.WriteFiles(dir, "member")
	if err != nil {
		b.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		b.Fatal(err)
	}
	tc, err := mesh.NewTLSConfig(transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: caFile, ClientCertAuth: true})
	if err != nil {
		b.Fatal(err)
	}
	return tc
}

// datagramThroughput streams datagrams from src to dst with a bounded
// window of unacknowledged ones.
func datagramThroughput(b *testing.B, src, dst *mesh.Router) {
	const inflight, every = 512, 64
	ps, err := Listen(src, testPacketChannel, PacketConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer ps.Close()
	pd, err := Listen(dst, testPacketChannel, PacketConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer pd.Close()
	to := MeshAddr{dst.Name()}
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			msg := make([]byte, size)
			var received atomic.Int64
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // the reader, reporting its count
				defer wg.Done()
				buf := make([]byte, pd.MaxDatagramSize())
				var n int64
				for {
					_, from, err := pd.ReadFrom(buf)
					if err != nil {
						return // closed, or the deadline set below
					}
					n++
					received.Store(n)
					if n%every == 0 {
						pd.WriteTo(binary.BigEndian.AppendUint64(nil, uint64(n)), from)
					}
				}
			}()
			var acked atomic.Int64
			wake := make(chan struct{}, 1)
			go func() { // the sender's ack reader
				defer wg.Done()
				buf := make([]byte, 64)
				for {
					n, _, err := ps.ReadFrom(buf)
					if err != nil {
						return
					}
					if n == 8 {
						acked.Store(int64(binary.BigEndian.Uint64(buf)))
						select {
						case wake <- struct{}{}:
						default:
						}
					}
				}
			}()
			stalls := 0
			forgiven := int64(0)
			b.ResetTimer()
			start, cpu0 := time.Now(), processCPU()
			for i := range int64(b.N) {
				for i-acked.Load()-forgiven >= inflight {
					select {
					case <-wake:
					case <-time.After(200 * time.Millisecond):
						stalls++
						forgiven = i - acked.Load()
					}
				}
				for {
					_, err := ps.WriteTo(msg, to)
					if err == nil {
						break
					}
					if !errors.Is(err, mesh.ErrQueueFull) {
						b.Fatal(err)
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			// Wait for the tail to arrive (or be lost).
			for last, t := received.Load(), time.Now(); received.Load() < int64(b.N); {
				if cur := received.Load(); cur != last {
					last, t = cur, time.Now()
				} else if time.Since(t) > 200*time.Millisecond {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			el, cpu := time.Since(start), processCPU()-cpu0
			b.StopTimer()
			n := received.Load()
			pd.SetReadDeadline(time.Now())
			ps.SetReadDeadline(time.Now())
			wg.Wait()
			pd.SetReadDeadline(time.Time{})
			ps.SetReadDeadline(time.Time{})
			b.ReportMetric(float64(n)*float64(size)/el.Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(el.Microseconds())/float64(b.N), "µs/op")
			b.ReportMetric(float64(int64(b.N)-n)/float64(b.N), "lost/op")
			b.ReportMetric(float64(stalls), "stalls")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}

// BenchmarkBulkTransfer moves 16 MiB per op with default settings (so the
// mesh's per-connection bulk rate applies) and with the rate limit
// lifted, to show the protocol's own ceiling.
func BenchmarkBulkTransfer(b *testing.B) {
	const size = 16 << 20
	for _, relay := range []bool{false, true} {
		for _, unlimited := range []bool{false, true} {
			name := map[bool]string{false: "direct", true: "relay"}[relay] + "/" + map[bool]string{false: "rate-default", true: "rate-unlimited"}[unlimited]
			b.Run(name, func(b *testing.B) {
				src, dst := tcpRouters(b, relay, true, func(c *mesh.Config) {
					if unlimited {
						c.BulkRate = 1 << 40
					}
				})
				bs, err := NewBulk(src, testBulkChannel, BulkConfig{})
				if err != nil {
					b.Fatal(err)
				}
				defer bs.Close()
				bd, err := NewBulk(dst, testBulkChannel, BulkConfig{Handler: func(ctx context.Context, in *Incoming) error {
					_, err := io.Copy(io.Discard, in.Body)
					return err
				}})
				if err != nil {
					b.Fatal(err)
				}
				defer bd.Close()
				b.SetBytes(size)
				b.ResetTimer()
				for range b.N {
					if err := bs.Send(context.Background(), dst.Name(), []byte("meta"), io.LimitReader(zeroReader{}, size)); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
				b.ReportMetric(float64(bs.Stats().Rewinds)/float64(b.N), "rewinds/op")
			})
		}
	}
}

// processCPU is the CPU time (user + system) this process has used: both
// ends of a benchmark's link run in it, so CPU per datagram is the cost
// of the whole path, which a loaded machine distorts far less than the
// throughput.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// directChannel hands each datagram straight to the handler on the
// caller's goroutine: no mesh, just meshconn's own cost per datagram.
type directChannel struct{ h mesh.DatagramHandler }

func (d *directChannel) Send(dst mesh.PeerName, p []byte) error { d.h("a", p); return nil }
func (d *directChannel) SendWithHeader(dst mesh.PeerName, h, p []byte) error {
	return d.Send(dst, joinDatagram(h, p))
}
func (d *directChannel) MaxPayload() int { return 1 << 20 }

// BenchmarkPacketConnOverhead: WriteTo + delivery + ReadFrom of one
// datagram without a network: framing, checksum, copies, queueing.
func BenchmarkPacketConnOverhead(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			c, err := newPacketConn("a", func(h mesh.DatagramHandler) (channel, error) { return &directChannel{h}, nil }, PacketConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, size), make([]byte, size)
			to := MeshAddr{"b"}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.WriteTo(msg, to); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.ReadFrom(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
