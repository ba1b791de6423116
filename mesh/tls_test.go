package mesh

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/pki"
	"github.com/meshetcd/meshetcd/internal/testutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testPKI issues peer certificates into a temporary directory.
type testPKI struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, dir: dir, ca: ca, caFile: caFile}
}

// issue writes a certificate for req and returns etcd's peer TLS settings
// for it: this CA trusted, client certificates required. The client SAN
// check is off: memnet's host names resolve nowhere
// (TestTLSClientSANCheck covers it on loopback TCP).
func (p *testPKI) issue(file string, req pki.Request) (transport.TLSInfo, *x509.Certificate) {
	p.t.Helper()
	iss, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, key, err := iss.WriteFiles(p.dir, file)
	if err != nil {
		p.t.Fatal(err)
	}
	return transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: p.caFile, ClientCertAuth: true, SkipClientSANVerify: true}, iss.Cert
}

// member is a good certificate for the memnet host name, CN "member".
func (p *testPKI) member(name string) transport.TLSInfo {
	info, _ := p.issue(name, pki.Request{CommonName: "member", DNSNames: []string{name}})
	return info
}

func mustTLS(t *testing.T, info transport.TLSInfo) *TLSConfig {
	t.Helper()
	c, err := NewTLSConfig(info)
	if err != nil {
		t.Fatalf("NewTLSConfig: %v", err)
	}
	return c
}

// withTLS replaces the test secret by TLS.
func withTLS(tc *TLSConfig) func(*Config) {
	return func(c *Config) { c.PSK, c.TLS = nil, tc }
}

func connectionEncryption(r *Router, peer PeerName) string {
	for _, c := range r.Status().Connections {
		if c.Peer == peer && c.State == "established" {
			return c.Encryption
		}
	}
	return ""
}

func TestTLSGoodCertificatesConnect(t *testing.T) {
	p := newTestPKI(t, "ca")
	c := newCluster(t)
	a := c.start("a", withTLS(mustTLS(t, p.member("a"))))
	b := c.start("b", withTLS(mustTLS(t, p.member("b"))), "a")
	d := c.start("d", withTLS(mustTLS(t, p.member("d"))), "a")
	testutil.Eventually(t, 10*time.Second, "a, b, d reach each other", func() bool {
		return a.Reachable("b") && a.Reachable("d") && b.Reachable("d") && d.Reachable("a") && connectionEncryption(a, "b") != ""
	})
	if got := connectionEncryption(a, "b"); got != EncryptionTLS {
		t.Errorf("a→b encryption %q, want %q", got, EncryptionTLS)
	}
	if st := a.Status(); st.Encryption != EncryptionTLS || !st.Encrypted {
		t.Errorf("a status encryption %q encrypted %v", st.Encryption, st.Encrypted)
	}
	// Datagrams flow over the TLS link.
	got := make(chan []byte, 1)
	if _, err := b.NewDatagramChannel(100, "t", PriorityInteractive, func(_ PeerName, pl []byte) {
		select {
		case got <- slices.Clone(pl):
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	ch, err := a.NewDatagramChannel(100, "t", PriorityInteractive, func(PeerName, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Send("b", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	select {
	case pl := <-got:
		if !bytes.Equal(pl, []byte("over tls")) {
			t.Errorf("got %q", pl)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("datagram over TLS not delivered")
	}
}

// Each bad certificate is refused at the handshake by the member it
// tries to join, with its reason in Status().HandshakeFailures and one
// error line per remote and reason per AuthFailureBackoff.
func TestTLSBadCertificatesRefused(t *testing.T) {
	p := newTestPKI(t, "ca")
	foreign := newTestPKI(t, "foreign-ca")
	revokedInfo, revokedCert := p.issue("revoked", pki.Request{CommonName: "member", DNSNames: []string{"x"}})
	crl, err := p.ca.CRL(revokedCert)
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(p.dir, "peers.crl")
	if err := os.WriteFile(crlFile, crl, 0o600); err != nil {
		t.Fatal(err)
	}
	expired, _ := p.issue("expired", pki.Request{CommonName: "member", DNSNames: []string{"x"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	foreignInfo, _ := foreign.issue("foreign", pki.Request{CommonName: "member", DNSNames: []string{"x", "a"}})
	// The foreign member trusts our CA too, so only a's check refuses it.
	foreignInfo.TrustedCAFile = p.caFile
	intruder, _ := p.issue("intruder", pki.Request{CommonName: "intruder", DNSNames: []string{"x"}})
	otherHost, _ := p.issue("otherhost", pki.Request{CommonName: "member", DNSNames: []string{"elsewhere"}})

	// A client that presents no certificate at all.
	goodX := mustTLS(t, p.member("x"))
	noCert := &TLSConfig{Server: goodX.Server, Client: goodX.Client.Clone()}
	noCert.Client.GetClientCertificate = nil
	noCert.Client.Certificates = nil

	for _, tc := range []struct {
		name   string
		a      func(transport.TLSInfo) transport.TLSInfo // a's settings from its good ones
		x      *TLSConfig
		reason string
	}{
		{"foreign CA", nil, mustTLS(t, foreignInfo), reasonUnknownCA},
		{"expired", nil, mustTLS(t, expired), reasonExpired},
		{"revoked", func(i transport.TLSInfo) transport.TLSInfo { i.CRLFile = crlFile; return i }, mustTLS(t, revokedInfo), reasonRevoked},
		{"disallowed CN", func(i transport.TLSInfo) transport.TLSInfo { i.AllowedCNs = []string{"member"}; return i }, mustTLS(t, intruder), reasonNotAllowed},
		{"disallowed hostname", func(i transport.TLSInfo) transport.TLSInfo { i.AllowedHostnames = []string{"a", "x"}; return i }, mustTLS(t, otherHost), reasonNotAllowed},
		{"no client certificate", nil, noCert, reasonNoCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aInfo := p.member("a")
			if tc.a != nil {
				aInfo = tc.a(aInfo)
			}
			core, logs := observer.New(zap.InfoLevel)
			c := newCluster(t)
			a := c.start("a", func(cfg *Config) {
				withTLS(mustTLS(t, aInfo))(cfg)
				cfg.Logger = zap.New(core)
				cfg.AuthFailureBackoff = time.Minute // one loud line for the whole test
			})
			c.start("x", func(cfg *Config) {
				withTLS(tc.x)(cfg)
				cfg.AuthFailureBackoff = 50 * time.Millisecond // keep redialling
			}, "a")
			testutil.Eventually(t, 10*time.Second, "a refuses x at least twice", func() bool {
				n := 0
				for _, f := range a.Status().HandshakeFailures {
					if f.Reason == tc.reason && f.Direction == "inbound" {
						n++
					}
				}
				return n >= 2
			})
			if a.Reachable("x") {
				t.Error("x joined the mesh despite its certificate")
			}
			if n := refusedLines(t, logs, tc.reason); n != 1 {
				t.Errorf("a logged the refusal %d times, want once per period", n)
			}
		})
	}
}

// A dialled peer's certificate must name the address we dial.
func TestTLSDialledAddressMustMatchCertificate(t *testing.T) {
	p := newTestPKI(t, "ca")
	wrong, _ := p.issue("a-wrong", pki.Request{CommonName: "member", DNSNames: []string{"not-a"}})
	c := newCluster(t)
	c.start("a", withTLS(mustTLS(t, wrong)))
	x := c.start("x", withTLS(mustTLS(t, p.member("x"))), "a")
	testutil.Eventually(t, 10*time.Second, "x refuses a's certificate", func() bool {
		for _, f := range x.Status().HandshakeFailures {
			if f.Reason == reasonHostname && f.Direction == "outbound" {
				return true
			}
		}
		return false
	})
	if x.Reachable("a") {
		t.Error("x connected to a certificate for another host")
	}
}

// With TLS and a mesh secret both are required; TLS against a peer
// without TLS is an encryption mode mismatch.
func TestTLSWithSecretAndModeMismatch(t *testing.T) {
	p := newTestPKI(t, "ca")
	c := newCluster(t)
	both := func(name string, psk []byte) func(*Config) {
		tc := mustTLS(t, p.member(name))
		return func(cfg *Config) { cfg.TLS, cfg.PSK = tc, psk }
	}
	a := c.start("a", both("a", testPSK))
	b := c.start("b", both("b", testPSK), "a")
	// Reachable at a does not mean b has registered its end yet.
	testutil.Eventually(t, 10*time.Second, "a reaches b with TLS and the secret", func() bool {
		return a.Reachable("b") && connectionEncryption(b, "a") != ""
	})
	if got := connectionEncryption(b, "a"); got != EncryptionTLSPSK {
		t.Errorf("encryption %q, want %q", got, EncryptionTLSPSK)
	}
	x := c.start("x", both("x", bytes.Repeat([]byte{9}, 32)), "a")
	z := c.start("z", withTLS(mustTLS(t, p.member("z"))), "a") // TLS without the secret
	c.start("y", nil, "a")                                     // the mesh secret, no TLS
	testutil.Eventually(t, 10*time.Second, "x refused for its secret, y for lacking TLS", func() bool {
		var secret, mode bool
		for _, f := range x.Status().HandshakeFailures {
			secret = secret || f.Reason == "mesh secret mismatch"
		}
		// y only sees the connection closed: a TLS acceptor never
		// answers a clear preamble.
		for _, f := range a.Status().HandshakeFailures {
			mode = mode || (f.Reason == "encryption mode mismatch" && f.Addr[:2] == "y:")
		}
		return secret && mode
	})
	testutil.Eventually(t, 10*time.Second, "z refused for lacking the secret", func() bool {
		for _, f := range z.Status().HandshakeFailures {
			if f.Reason == "encryption mode mismatch" && strings.Contains(f.Error, "only one also has the mesh secret") {
				return true
			}
		}
		return false
	})
	if a.Reachable("x") || a.Reachable("y") || a.Reachable("z") {
		t.Error("a peer without the secret or without TLS joined")
	}
}

func TestTLSConfigValidation(t *testing.T) {
	p := newTestPKI(t, "ca")
	tc := mustTLS(t, p.member("a"))
	for _, bad := range []func(*Config){
		func(c *Config) { c.PSK, c.TLS, c.EphemeralEncryption = nil, tc, true },
		func(c *Config) { c.PSK, c.TLS, c.InsecurePlaintext = nil, tc, true },
		func(c *Config) { c.PSK, c.TLS = nil, &TLSConfig{Server: tc.Server} },
	} {
		cfg := testConfig("a")
		bad(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted an invalid TLS combination")
		}
	}
	if _, err := NewTLSConfig(transport.TLSInfo{}); err == nil {
		t.Error("NewTLSConfig accepted empty settings")
	}
	if _, err := NewTLSConfig(transport.TLSInfo{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}); err == nil {
		t.Error("NewTLSConfig accepted missing files")
	}
	if tc.Server.MinVersion != tls.VersionTLS13 || tc.Client.MinVersion != tls.VersionTLS13 {
		t.Errorf("default TLS versions %x/%x, want TLS 1.3", tc.Server.MinVersion, tc.Client.MinVersion)
	}
	// etcd's --tls-min-version and --cipher-suites are honoured.
	info := p.member("b")
	info.MinVersion, info.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	info.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	tc12 := mustTLS(t, info)
	if tc12.Server.MinVersion != tls.VersionTLS12 || tc12.Client.MaxVersion != tls.VersionTLS12 || len(tc12.Server.CipherSuites) != 1 {
		t.Errorf("explicit TLS 1.2 settings not kept: min %x max %x suites %v", tc12.Server.MinVersion, tc12.Client.MaxVersion, tc12.Server.CipherSuites)
	}
}

// Certificates are re-read on every handshake: a member refused for an
// expired certificate joins once its files are replaced, without restart.
func TestTLSCertificateRotation(t *testing.T) {
	p := newTestPKI(t, "ca")
	c := newCluster(t)
	a := c.start("a", withTLS(mustTLS(t, p.member("a"))))
	xInfo, _ := p.issue("x", pki.Request{CommonName: "member", DNSNames: []string{"x"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	x := c.start("x", func(cfg *Config) {
		withTLS(mustTLS(t, xInfo))(cfg)
		cfg.AuthFailureBackoff = 50 * time.Millisecond
	}, "a")
	testutil.Eventually(t, 10*time.Second, "a refuses x's expired certificate", func() bool {
		for _, f := range a.Status().HandshakeFailures {
			if f.Reason == reasonExpired {
				return true
			}
		}
		return false
	})
	p.issue("x", pki.Request{CommonName: "member", DNSNames: []string{"x"}}) // same files, renewed
	testutil.Eventually(t, 10*time.Second, "x joins with its renewed certificate", func() bool { return a.Reachable("x") && x.Reachable("a") })
}

// A TLS link to a peer that stopped reading is dropped as fast as a
// plain one: closing it must not wait to write TLS's close_notify into a
// full send buffer.
func TestTLSStalledPeerDroppedPromptly(t *testing.T) {
	p := newTestPKI(t, "ca")
	c := newCluster(t)
	fast := func(tc *TLSConfig) func(*Config) {
		return func(cfg *Config) {
			withTLS(tc)(cfg)
			cfg.HeartbeatInterval = 100 * time.Millisecond
			cfg.DeadTimeout = 700 * time.Millisecond
		}
	}
	a := c.start("a", fast(mustTLS(t, p.member("a"))))
	c.start("b", fast(mustTLS(t, p.member("b"))), "a")
	ch, err := a.NewDatagramChannel(20, "t", PriorityInteractive, func(PeerName, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitLong, "a reaches b", func() bool { return a.Reachable("b") })
	c.net.StallReads("b", true)
	stalled := time.Now()
	big := bytes.Repeat([]byte{1}, 256<<10)
	for i := 0; i < 400; i++ {
		if err := ch.Send("b", big); err != nil {
			break
		}
	}
	testutil.Eventually(t, waitLong, "a drops the connection to the stalled b", func() bool { return a.connFor("b") == nil })
	if d := time.Since(stalled); d > 4*time.Second {
		t.Errorf("dropping the stalled TLS link took %v; the dead timeout is 700 ms", d)
	}
	t.Logf("dropped %v after the stall", time.Since(stalled))
}

// etcd's default peer check: the acceptor refuses a dialler whose
// certificate does not name the address it connects from, unless
// SkipClientSANVerify (--peer-skip-client-san-verification).
func TestTLSClientSANCheck(t *testing.T) {
	p := newTestPKI(t, "ca")
	loopback := func(file string, ips ...string) transport.TLSInfo {
		req := pki.Request{CommonName: "member"}
		for _, ip := range ips {
			req.IPs = append(req.IPs, net.ParseIP(ip))
		}
		info, _ := p.issue(file, req)
		info.SkipClientSANVerify = false
		return info
	}
	tcp := func(info transport.TLSInfo, seeds ...string) func(*Config) {
		return func(cfg *Config) {
			withTLS(mustTLS(t, info))(cfg)
			cfg.Transport = TCPTransport{}
			cfg.ListenAddr = "127.0.0.1:0"
			cfg.Seeds = seeds
		}
	}
	c := newCluster(t)
	a := c.start("a", tcp(loopback("a", "127.0.0.1")))
	if !a.cfg.TLS.CheckClientSAN {
		t.Fatal("NewTLSConfig left etcd's client SAN check off")
	}
	b := c.start("b", tcp(loopback("b", "127.0.0.1"), a.ListenAddr()))
	testutil.Eventually(t, waitLong, "b, whose certificate names 127.0.0.1, joins", func() bool { return a.Reachable("b") && b.Reachable("a") })

	x := c.start("x", tcp(loopback("x", "10.99.0.1"), a.ListenAddr()))
	testutil.Eventually(t, waitLong, "a refuses x, whose certificate names only 10.99.0.1", func() bool {
		for _, f := range a.Status().HandshakeFailures {
			if f.Reason == reasonSourceAddr {
				return true
			}
		}
		return false
	})
	testutil.Eventually(t, waitLong, "x learns that a refused its certificate", func() bool {
		for _, f := range x.Status().HandshakeFailures {
			if f.Reason == reasonRemoteRefuse {
				return true
			}
		}
		return false
	})
	if a.Reachable("x") {
		t.Error("x joined with a certificate for another address")
	}

	// --peer-skip-client-san-verification on the acceptor lets y in.
	skipping := loopback("a2", "127.0.0.1")
	skipping.SkipClientSANVerify = true
	c2 := newCluster(t)
	a2 := c2.start("a2", tcp(skipping))
	y := c2.start("y", tcp(loopback("y", "10.99.0.2"), a2.ListenAddr()))
	testutil.Eventually(t, waitLong, "with the check skipped, y joins", func() bool { return a2.Reachable("y") && y.Reachable("a2") })
}
