package mesh

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

// pipePair returns two ends of a buffered in-memory connection.
func pipePair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	nw := memnet.New()
	l, err := nw.Host("server").Listen("server:1")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := nw.Host("client").Dial(context.Background(), "server:1")
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func runBoth(t *testing.T, a, b localIdentity) (*handshakeResult, error, *handshakeResult, error) {
	t.Helper()
	ca, cb := pipePair(t)
	type out struct {
		res *handshakeResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := handshake(cb, b, 2*time.Second)
		if err != nil {
			cb.Close() // as the router does: a refused handshake closes the connection
		}
		done <- out{res, err}
	}()
	ra, ea := handshake(ca, a, 2*time.Second)
	if ea != nil {
		ca.Close()
	}
	o := <-done
	return ra, ea, o.res, o.err
}

func eph(id localIdentity) localIdentity {
	id.ephemeral = true
	return id
}

func ident(name string, uid uint64, psk []byte, label string) localIdentity {
	return localIdentity{name: PeerName(name), uid: uid, nickName: "n", label: label, addrs: []string{name + ":1"}, psk: psk}
}

func TestHandshakeMatrix(t *testing.T) {
	other := bytes.Repeat([]byte{9}, 32)
	cases := []struct {
		name    string
		a, b    localIdentity
		wantErr error // nil: both succeed
	}{
		{"same key", ident("a", 1, testPSK, "x"), ident("b", 2, testPSK, "x"), nil},
		{"plaintext both", ident("a", 1, nil, "x"), ident("b", 2, nil, "x"), nil},
		{"wrong key", ident("a", 1, testPSK, "x"), ident("b", 2, other, "x"), ErrAuth},
		{"plaintext vs encrypted", ident("a", 1, nil, "x"), ident("b", 2, testPSK, "x"), ErrEncryptionMismatch},
		{"wrong cluster", ident("a", 1, testPSK, "x"), ident("b", 2, testPSK, "y"), ErrWrongCluster},
		{"name collision", ident("a", 1, testPSK, "x"), ident("a", 2, testPSK, "x"), ErrNameCollision},
		{"self", ident("a", 1, testPSK, "x"), ident("a", 1, testPSK, "x"), errSelfConnect},
		{"ephemeral both", eph(ident("a", 1, nil, "x")), eph(ident("b", 2, nil, "x")), nil},
		{"ephemeral vs plaintext", eph(ident("a", 1, nil, "x")), ident("b", 2, nil, "x"), ErrEncryptionMismatch},
		{"ephemeral vs psk", eph(ident("a", 1, nil, "x")), ident("b", 2, testPSK, "x"), ErrEncryptionMismatch},
		{"psk vs ephemeral", ident("a", 1, testPSK, "x"), eph(ident("b", 2, nil, "x")), ErrEncryptionMismatch},
		{"ephemeral wrong cluster", eph(ident("a", 1, nil, "x")), eph(ident("b", 2, nil, "y")), ErrWrongCluster},
		{"ephemeral name collision", eph(ident("a", 1, nil, "x")), eph(ident("a", 2, nil, "x")), ErrNameCollision},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ra, ea, rb, eb := runBoth(t, tc.a, tc.b)
			if tc.wantErr == nil {
				if ea != nil || eb != nil {
					t.Fatalf("handshake failed: %v / %v", ea, eb)
				}
				if ra.remote.name != tc.b.name || rb.remote.name != tc.a.name || ra.remote.uid != tc.b.uid {
					t.Fatalf("wrong remote identity: %+v / %+v", ra.remote, rb.remote)
				}
				if (tc.a.mode() != modePlaintext) != (ra.send != nil) || ra.mode != tc.a.mode() || rb.mode != tc.b.mode() {
					t.Fatalf("encryption state mismatch")
				}
				return
			}
			if !errors.Is(ea, tc.wantErr) && !errors.Is(eb, tc.wantErr) {
				t.Fatalf("want %v, got %v / %v", tc.wantErr, ea, eb)
			}
			if ea == nil || eb == nil {
				t.Fatalf("one side succeeded: %v / %v", ea, eb)
			}
		})
	}
}

func TestHandshakeVersionMismatch(t *testing.T) {
	ca, cb := pipePair(t)
	go func() {
		p := preamble{minVersion: 7, maxVersion: 9, mode: modeEncrypted, label: labelDigest("x")}
		b := p.encode()
		_, _ = cb.Write(b[:])
	}()
	_, err := handshake(ca, ident("a", 1, testPSK, "x"), 2*time.Second)
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("want ErrVersion, got %v", err)
	}
}

func TestCipherRejectsTamperReplayReorder(t *testing.T) {
	ka, err := newEphemeralKey(randReader{})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := newEphemeralKey(randReader{seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	sendA, recvA, err := sessionKeys(ka, kb.pub, testPSK, "x")
	if err != nil {
		t.Fatal(err)
	}
	sendB, recvB, err := sessionKeys(kb, ka.pub, testPSK, "x")
	if err != nil {
		t.Fatal(err)
	}
	_ = recvA
	_ = sendB
	seal := func(cs *cipherState, msg string) []byte {
		buf := make([]byte, len(msg), len(msg)+aeadTagLen)
		copy(buf, msg)
		n, err := cs.seal(buf[:cap(buf)], len(msg))
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	open := func(cs *cipherState, ct []byte) (string, error) {
		buf := bytes.Clone(ct)
		n, err := cs.open(buf, len(buf))
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}

	tx, rx := newCipherState(sendA), newCipherState(recvB)
	m0, m1, m2 := seal(tx, "zero"), seal(tx, "one"), seal(tx, "two")
	if got, err := open(rx, m0); err != nil || got != "zero" {
		t.Fatalf("open m0 = %q, %v", got, err)
	}
	if _, err := open(rx, m0); !errors.Is(err, ErrAuth) {
		t.Fatalf("replay accepted: %v", err)
	}
	// The failed replay consumed counter 1, as a real connection would
	// have been closed at that point; a fresh receiver shows reordering.
	rx2 := newCipherState(recvB)
	if _, err := open(rx2, m0); err != nil {
		t.Fatal(err)
	}
	if _, err := open(rx2, m2); !errors.Is(err, ErrAuth) {
		t.Fatalf("reordered frame accepted: %v", err)
	}
	rx3 := newCipherState(recvB)
	tampered := bytes.Clone(m0)
	tampered[0] ^= 1
	if _, err := open(rx3, tampered); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered frame accepted: %v", err)
	}
	_ = m1
	// Directional keys: a frame reflected back to its sender never opens.
	reflect := newCipherState(recvA)
	if _, err := open(reflect, m0); !errors.Is(err, ErrAuth) {
		t.Fatalf("reflected frame accepted: %v", err)
	}
}

// randReader is a deterministic byte source for key generation in tests.
type randReader struct{ seed byte }

func (r randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)*31 + r.seed*17 + 1
	}
	return len(p), nil
}

func TestWrongSecretAndLabelRefusedInLiveMesh(t *testing.T) {
	c := newCluster(t)
	a := c.start("a", nil)
	c.start("b", nil, "a")
	bad := c.start("evil", func(cfg *Config) { cfg.PSK = bytes.Repeat([]byte{1}, 32) }, "a")
	other := c.start("other", func(cfg *Config) { cfg.ClusterLabel = "another-cluster" }, "a")
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	hasFailure := func(r *Router, want error) bool {
		for _, f := range r.Status().HandshakeFailures {
			if strings.Contains(f.Error, want.Error()) {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, waitLong, "ErrAuth in status on both sides", func() bool {
		return hasFailure(a, ErrAuth) && hasFailure(bad, ErrAuth)
	})
	testutil.Eventually(t, waitLong, "ErrWrongCluster in status on both sides", func() bool {
		return hasFailure(a, ErrWrongCluster) && hasFailure(other, ErrWrongCluster)
	})
	for _, p := range a.Status().Peers {
		if p.Name == "evil" || p.Name == "other" {
			t.Fatalf("refused peer %s entered the topology", p.Name)
		}
	}
	var target *TargetStatus
	for _, ts := range bad.Status().Targets {
		if ts.Seed {
			target = &ts
		}
	}
	if target == nil || !strings.Contains(target.LastError, "authentication") {
		t.Fatalf("evil's seed target does not show the auth error: %+v", target)
	}
}

// startTCPRouter starts a router on loopback TCP.
func startTCPRouter(t *testing.T, name string, tweak func(*Config), seeds ...string) *Router {
	t.Helper()
	cfg := testConfig(name)
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Seeds = seeds
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

func TestGarbageOnMeshPortClosesOnlyThatConnection(t *testing.T) {
	checkNoLeaks(t)
	a := startTCPRouter(t, "a", func(cfg *Config) { cfg.PerIPBurst = 100; cfg.AcceptBurst = 100 })
	addr := a.ListenAddr()
	validPreamble := func() []byte {
		p := preamble{minVersion: protocolVersion, maxVersion: protocolVersion, mode: modeEncrypted, label: labelDigest("test-cluster")}
		copy(p.pub[:], bytes.Repeat([]byte{5}, 32))
		b := p.encode()
		return b[:]
	}
	huge := binary.BigEndian.AppendUint32(validPreamble(), 0xFFFFFFFF)
	oversized := binary.BigEndian.AppendUint32(validPreamble(), handshakeFrameCap+1)
	truncated := append(binary.BigEndian.AppendUint32(validPreamble(), 100), make([]byte, 10)...)
	garbageHello := append(binary.BigEndian.AppendUint32(validPreamble(), 40), bytes.Repeat([]byte{0xAB}, 40)...)
	inputs := map[string][]byte{
		"random bytes":    bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 100),
		"http get":        []byte("GET /mesh/status HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls clienthello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"4GiB length":     huge,
		"oversized hello": oversized,
		"truncated frame": truncated,
		"garbage hello":   garbageHello,
		"nothing":         nil,
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			defer func() {
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				// A hostile length must never be allocated: the whole exchange
				// stays far below even one megabyte-sized frame.
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
					t.Errorf("handling %s allocated %d bytes", name, grew)
				}
			}()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if in != nil {
				if _, err := nc.Write(in); err != nil {
					t.Fatal(err)
				}
			}
			if name == "truncated frame" || name == "nothing" {
				// The router waits for the rest until the handshake timeout.
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = readAll(nc)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("router did not close the connection")
			}
		})
	}
	// The router still works: a real peer connects and exchanges data.
	b := startTCPRouter(t, "b", nil, addr)
	ib := &inbox{}
	testChannel(t, b, ib)
	ch := testChannel(t, a, nil)
	testutil.Eventually(t, waitLong, "a→b after garbage", func() bool {
		_ = ch.Send("b", []byte("still alive"))
		return ib.has("a:still alive")
	})
	if n := a.Status().Counters["handshake_failures"]; n < uint64(len(inputs)) {
		t.Fatalf("handshake_failures = %d, want ≥ %d", n, len(inputs))
	}
}

func readAll(nc net.Conn) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := nc.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func TestLoopbackTCPRelayAndRestart(t *testing.T) {
	checkNoLeaks(t)
	// a and c may hold one connection each, so both attach to b and
	// a→c must be relayed.
	limit1 := func(cfg *Config) { cfg.ConnLimit = 1 }
	b := startTCPRouter(t, "b", nil)
	a := startTCPRouter(t, "a", limit1, b.ListenAddr())
	c := startTCPRouter(t, "c", limit1, b.ListenAddr())
	ic := &inbox{}
	testChannel(t, c, ic)
	cha := testChannel(t, a, nil)
	testutil.Eventually(t, waitLong, "a reaches c through b", func() bool {
		hop, ok := a.routes.Load().nextHop("c")
		return ok && hop == "b"
	})
	testutil.Eventually(t, waitLong, "a→c over TCP via b", func() bool {
		_ = cha.Send("c", []byte("relayed"))
		return ic.has("a:relayed")
	})
	st := a.Status()
	if len(st.Connections) != 1 || !st.Connections[0].Encrypted || st.Connections[0].Peer != "b" {
		t.Fatalf("unexpected connections: %+v", st.Connections)
	}
	// Restart c with the same name: a sees the new incarnation.
	oldUID := c.UID()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, "a loses c", func() bool { return !a.Reachable("c") })
	c2 := startTCPRouter(t, "c", limit1, b.ListenAddr())
	testutil.Eventually(t, waitLong, "a reaches the new c", func() bool {
		return a.Reachable("c") && a.routes.Load().uids["c"] == c2.UID() && c2.UID() != oldUID
	})
}

func TestLoopbackTCPConvergence(t *testing.T) {
	checkNoLeaks(t)
	const n = 8
	first := startTCPRouter(t, "t0", nil)
	routers := []*Router{first}
	for i := 1; i < n; i++ {
		prev := routers[len(routers)-1]
		routers = append(routers, startTCPRouter(t, fmt.Sprintf("t%d", i), nil, prev.ListenAddr()))
	}
	testutil.Eventually(t, 60*time.Second, "8 TCP peers in one topology, full mesh", func() bool {
		ref := topologyView(first)
		for _, r := range routers {
			if topologyView(r) != ref || len(r.routes.Load().next) != n-1 || len(r.Status().Connections) != n-1 {
				return false
			}
		}
		return true
	})
	// A peer that stops is reported unreachable by everyone.
	last := routers[n-1]
	if err := last.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, r := range routers[:n-1] {
		testutil.Eventually(t, waitLong, "stopped peer unreachable", func() bool { return !r.Reachable(last.Name()) })
	}
}

// recordingConn keeps a copy of everything written.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, b...)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// Ephemeral mode encrypts the hello (and so everything after it) without
// any shared secret, and says which mode it is in a mismatch.
func TestHandshakeEphemeralEncryptsWithoutSecret(t *testing.T) {
	for _, tc := range []struct {
		name  string
		a     localIdentity
		clear bool
	}{
		{"ephemeral", eph(ident("peer-alpha", 1, nil, "x")), false},
		{"plaintext", ident("peer-alpha", 1, nil, "x"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cb := pipePair(t)
			rec := &recordingConn{Conn: ca}
			b := tc.a
			b.name, b.uid = "peer-bravo", 2
			done := make(chan error, 1)
			go func() {
				_, err := handshake(cb, b, 2*time.Second)
				done <- err
			}()
			res, err := handshake(rec, tc.a, 2*time.Second)
			if err != nil || <-done != nil {
				t.Fatalf("handshake: %v", err)
			}
			rec.mu.Lock()
			wire := slices.Clone(rec.out)
			rec.mu.Unlock()
			if got := bytes.Contains(wire, []byte("peer-alpha")); got != tc.clear {
				t.Fatalf("name in clear on the wire = %v, want %v", got, tc.clear)
			}
			if tc.clear {
				return
			}
			// Later frames are sealed with the session keys.
			msg := []byte("secret payload for peer-bravo")
			buf := make([]byte, len(msg), len(msg)+aeadTagLen)
			copy(buf, msg)
			n, err := res.send.seal(buf, len(msg))
			if err != nil || bytes.Contains(buf[:n], msg) {
				t.Fatalf("seal: %v, sealed frame contains the plaintext", err)
			}
		})
	}
	_, ea, _, eb := runBoth(t, eph(ident("a", 1, nil, "x")), ident("b", 2, testPSK, "x"))
	for _, err := range []error{ea, eb} {
		if !errors.Is(err, ErrEncryptionMismatch) || !strings.Contains(err.Error(), "ephemeral keys only (auto TLS)") || !strings.Contains(err.Error(), "mesh secret") {
			t.Fatalf("mismatch error does not name both modes: %v", err)
		}
	}
}

// A mesh in ephemeral mode forms and reports the mode per connection.
func TestEphemeralMeshStatus(t *testing.T) {
	c := newCluster(t)
	ephemeral := func(cfg *Config) { cfg.PSK = nil; cfg.EphemeralEncryption = true }
	a := c.start("a", ephemeral)
	c.start("b", ephemeral, "a")
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	st := a.Status()
	if !st.Encrypted || st.Encryption != EncryptionEphemeral {
		t.Fatalf("router status: encrypted %v, encryption %q", st.Encrypted, st.Encryption)
	}
	for _, cs := range st.Connections {
		if cs.State == "established" && (!cs.Encrypted || cs.Encryption != EncryptionEphemeral) {
			t.Fatalf("connection status: %+v", cs)
		}
	}
	if _, err := New(func() Config { cfg := testConfig("z"); cfg.EphemeralEncryption = true; return cfg }()); err == nil {
		t.Fatal("New accepted EphemeralEncryption together with a PSK")
	}
}
