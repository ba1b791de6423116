package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/internal/pki"
	"github.com/meshetcd/meshetcd/internal/testutil"
)

// tlsFixture is a CA with a server certificate for 127.0.0.1/localhost and
// client certificates, written where etcd's flags read them.
type tlsFixture struct {
	dir    string
	ca     *pki.CA
	caFile string
	// server, root (CN root), nobody (CN naming no user) and foreign
	// (CN root, signed by another CA): cert and key paths.
	server, root, nobody, foreign certPair
}

type certPair struct{ cert, key string }

func newTLSFixture(t testing.TB) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir()}
	var err error
	if f.ca, err = pki.NewCA("meshetcd test CA", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.caFile, err = f.ca.WriteCA(f.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	f.server = f.issue(t, f.ca, "server", pki.Request{CommonName: "server", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	f.root = f.issue(t, f.ca, "root", pki.Request{CommonName: "root"})
	f.nobody = f.issue(t, f.ca, "nobody", pki.Request{CommonName: "nobody"})
	other, err := pki.NewCA("foreign CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.foreign = f.issue(t, other, "foreign", pki.Request{CommonName: "root"})
	return f
}

func (f *tlsFixture) issue(t testing.TB, ca *pki.CA, name string, req pki.Request) certPair {
	t.Helper()
	iss, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := iss.WriteFiles(f.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return certPair{c, k}
}

// serverArgs are the member flags for one https:// client URL with mutual
// TLS (the same flags for etcd and meshetcd).
func (f *tlsFixture) serverArgs(extra ...string) []string {
	return append([]string{
		"--listen-client-urls", "https://127.0.0.1:0",
		"--advertise-client-urls", "https://127.0.0.1:0",
		"--cert-file", f.server.cert, "--key-file", f.server.key,
		"--trusted-ca-file", f.caFile, "--client-cert-auth",
	}, extra...)
}

// ctlArgs are etcdctl's TLS flags presenting client certificate c.
func (f *tlsFixture) ctlArgs(c certPair) []string {
	return []string{"--cacert", f.caFile, "--cert", c.cert, "--key", c.key}
}

// clientTLS is a client configuration trusting the CA, presenting c (when
// set).
func (f *tlsFixture) clientTLS(t testing.TB, c *certPair) *tls.Config {
	t.Helper()
	info := transport.TLSInfo{TrustedCAFile: f.caFile}
	if c != nil {
		info.CertFile, info.KeyFile = c.cert, c.key
	}
	if c == nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(f.ca.CertPEM)
		return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	cfg, err := info.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func tlsClient(t testing.TB, endpoint string, cfg *tls.Config) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, TLS: cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clientv3.New(%s): %v", endpoint, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// loggedAddress is the address of the client listener logged with msg
// ("serving client traffic securely" or "... insecurely").
func loggedAddress(t testing.TB, p *Proc, msg string) string {
	t.Helper()
	for _, e := range p.Logs.entries() {
		if strings.HasPrefix(e.msg(), msg) {
			if a, ok := e["address"].(string); ok {
				return a
			}
		}
	}
	t.Fatalf("no %q line in the log", msg)
	return ""
}

// TestClientTLS serves https:// and http:// client URLs side by side with
// mutual TLS on the https one: etcdctl and clientv3 work with a client
// certificate from the CA; every HTTP endpoint is served over TLS; clients
// without a certificate, with a foreign one, in plaintext on the TLS port
// or with TLS on the plaintext port fail promptly with an error.
func TestClientTLS(t *testing.T) {
	f := newTLSFixture(t)
	p := StartProc(t, ProcOptions{Args: []string{
		"--listen-client-urls", "https://127.0.0.1:0,http://127.0.0.1:0",
		"--advertise-client-urls", "https://127.0.0.1:0",
		"--cert-file", f.server.cert, "--key-file", f.server.key,
		"--trusted-ca-file", f.caFile, "--client-cert-auth",
	}})
	secure := loggedAddress(t, p, "serving client traffic securely")
	plain := loggedAddress(t, p, "serving client traffic insecurely")

	t.Run("etcdctl", func(t *testing.T) {
		p.CtlArgs = f.ctlArgs(f.root)
		defer func() { p.CtlArgs = nil }()
		p.Endpoint = secure
		p.MustCtl(t, "put", "k", "v-tls")
		if out := p.MustCtl(t, "get", "k", "--print-value-only"); out != "v-tls\n" {
			t.Errorf("get over mTLS = %q", out)
		}
		if out := p.MustCtl(t, "endpoint", "health"); !strings.Contains(out, "is healthy") {
			t.Errorf("endpoint health over mTLS = %q", out)
		}
		// The advertised URL is the https:// listener's.
		if out := p.MustCtl(t, "member", "list"); !strings.Contains(out, "https://"+secure) {
			t.Errorf("member list does not advertise https://%s: %q", secure, out)
		}
		// No client certificate: refused at the handshake, reported, no hang.
		p.CtlArgs = []string{"--cacert", f.caFile, "--dial-timeout=3s", "--command-timeout=5s"}
		start := time.Now()
		if out, errOut, err := p.Ctl("get", "k"); err == nil {
			t.Errorf("etcdctl without a client certificate succeeded: %q", out)
		} else if time.Since(start) > 20*time.Second {
			t.Errorf("etcdctl without a client certificate took %v to fail: %s", time.Since(start), errOut)
		}
		// Plaintext etcdctl on the TLS port.
		p.CtlArgs = []string{"--dial-timeout=3s", "--command-timeout=5s"}
		start = time.Now()
		if out, _, err := p.Ctl("get", "k"); err == nil {
			t.Errorf("plaintext etcdctl on the TLS port succeeded: %q", out)
		} else if time.Since(start) > 20*time.Second {
			t.Errorf("plaintext etcdctl on the TLS port took %v to fail", time.Since(start))
		}
		// TLS etcdctl on the plaintext port.
		p.Endpoint = plain
		p.CtlArgs = append(f.ctlArgs(f.root), "--dial-timeout=3s", "--command-timeout=5s")
		start = time.Now()
		if out, _, err := p.Ctl("get", "k"); err == nil {
			t.Errorf("TLS etcdctl on the plaintext port succeeded: %q", out)
		} else if time.Since(start) > 20*time.Second {
			t.Errorf("TLS etcdctl on the plaintext port took %v to fail", time.Since(start))
		}
		// The http:// listener beside it still serves plaintext.
		p.CtlArgs = nil
		if out := p.MustCtl(t, "get", "k", "--print-value-only"); out != "v-tls\n" {
			t.Errorf("get over plaintext = %q", out)
		}
	})

	t.Run("clientv3", func(t *testing.T) {
		c := tlsClient(t, secure, f.clientTLS(t, &f.root))
		if _, err := c.Put(ctx(t), "k2", "v2"); err != nil {
			t.Fatalf("put over mTLS: %v", err)
		}
		wctx, cancel := context.WithCancel(ctx(t))
		defer cancel()
		wch := c.Watch(wctx, "k3")
		if _, err := c.Put(ctx(t), "k3", "v3"); err != nil {
			t.Fatal(err)
		}
		select {
		case wr := <-wch:
			if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "v3" {
				t.Errorf("watch over mTLS: %+v", wr)
			}
		case <-time.After(reqTimeout):
			t.Fatal("no watch event over mTLS")
		}

		// Each must fail within seconds; they run side by side.
		for _, tc := range []struct {
			name, endpoint string
			cfg            *tls.Config
		}{
			{"no client certificate", secure, f.clientTLS(t, nil)},
			{"foreign CA", secure, f.clientTLS(t, &f.foreign)},
			{"plaintext on the TLS port", secure, nil},
			{"TLS on the plaintext port", plain, f.clientTLS(t, &f.root)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				assertClientFails(t, tc.name, tc.endpoint, tc.cfg)
			})
		}
	})

	t.Run("http", func(t *testing.T) {
		hc := &http.Client{Timeout: reqTimeout, Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, &f.root), ForceAttemptHTTP2: true}}
		for path, want := range map[string]string{
			"/health":      `"health":"true"`,
			"/version":     `"etcdserver":"3.7.3"`,
			"/metrics":     "etcd_cluster_version",
			"/mesh/status": `"peers"`,
		} {
			body := httpsGet(t, hc, "https://"+secure+path)
			if !strings.Contains(body, want) {
				t.Errorf("GET https://%s%s lacks %q:\n%.300s", secure, path, want, body)
			}
		}
		resp, err := hc.Post("https://"+secure+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"azI="}`))
		if err != nil {
			t.Fatalf("gateway over mTLS: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"value":"djI="`) {
			t.Errorf("gateway range over mTLS: %d %s", resp.StatusCode, body)
		}
		// Without a client certificate the handshake fails.
		nc := &http.Client{Timeout: reqTimeout, Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, nil)}}
		if resp, err := nc.Get("https://" + secure + "/health"); err == nil {
			resp.Body.Close()
			t.Errorf("GET /health without a client certificate: %s, want a handshake error", resp.Status)
		}
	})
}

func httpsGet(t testing.TB, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s %s", u, resp.Status, b)
	}
	return string(b)
}

// assertClientFails checks that a clientv3 request through endpoint with
// cfg (nil: plaintext) fails within a few seconds instead of hanging.
func assertClientFails(t *testing.T, name, endpoint string, cfg *tls.Config) {
	t.Helper()
	start := time.Now()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, TLS: cfg, Logger: zap.NewNop()})
	if err == nil {
		defer c.Close()
		rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = c.Get(rctx, "k")
		cancel()
	}
	if err == nil {
		t.Errorf("%s: request succeeded, want an error", name)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("%s: took %v to fail", name, d)
	}
}

// TestClientTLSBadInput starts meshetcd (and etcd, when bin/etcd exists)
// with bad TLS input: each must exit promptly with etcd's message. Exit
// codes: 1 for files that cannot be used, as etcd; 2 for flag values
// meshetcd refuses while parsing (etcd exits 1 for those).
func TestClientTLSBadInput(t *testing.T) {
	f := newTLSFixture(t)
	missing := filepath.Join(f.dir, "missing.crt")
	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"https without cert", f.serverArgs()[:4], 2, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme"},
		{"missing cert file", f.serverArgs("--cert-file", missing), 1, "open " + missing + ": no such file or directory"},
		{"mismatched key", f.serverArgs("--key-file", f.root.key), 1, "tls: private key does not match public key"},
		{"missing CA file", f.serverArgs("--trusted-ca-file", missing), 1, "open " + missing + ": no such file or directory"},
		{"unknown cipher suite", f.serverArgs("--cipher-suites", "FOO"), 2, `unexpected TLS cipher suite "FOO"`},
		{"min above max", f.serverArgs("--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"), 2, "min version (TLS1.3) is greater than max version (TLS1.2)"},
		{"unknown version", f.serverArgs("--tls-min-version", "TLS1.1"), 2, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`},
		// HTTP/2 (gRPC) needs an AES-128-GCM suite: etcd fails when it
		// starts serving, and so does meshetcd, with the same message.
		{"no HTTP/2 cipher suite", f.serverArgs("--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"), 1, "http2: TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher"},
		{"ciphers with TLS1.3 only", f.serverArgs("--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), 2, "cipher suites cannot be configured when only TLS1.3 is enabled"},
	}
	base := func(dir string) []string {
		return []string{"--name", "bad", "--data-dir", filepath.Join(dir, "bad.data"),
			"--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0"}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := RunOnce(t, bins.meshetcd, nil, append(base(t.TempDir()), tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.contains) {
				t.Errorf("meshetcd: exit %d, want %d with %q:\n%s", code, tc.code, tc.contains, tail(out, 10))
			}
			if bins.etcd == "" {
				return
			}
			// etcd needs a fixed peer port.
			peer := "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
			args := append([]string{"--name", "bad", "--data-dir", filepath.Join(t.TempDir(), "bad.data"),
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "bad=" + peer}, tc.args...)
			code, out = RunOnce(t, bins.etcd, nil, args...)
			quoted, _ := json.Marshal(tc.contains) // etcd logs the error in JSON
			if code != 1 || !strings.Contains(out, strings.Trim(string(quoted), `"`)) {
				t.Errorf("etcd (reference): exit %d with %q expected:\n%s", code, tc.contains, tail(out, 10))
			}
		})
	}
}

// TestClientCertRotation replaces the server certificate files while a
// client stays connected: the client keeps working, and new connections
// get the new certificate (etcd's TLSInfo reads the files per handshake).
func TestClientCertRotation(t *testing.T) {
	f := newTLSFixture(t)
	p := StartProc(t, ProcOptions{Args: f.serverArgs()})
	c := tlsClient(t, p.Endpoint, f.clientTLS(t, &f.root))
	if _, err := c.Put(ctx(t), "before", "1"); err != nil {
		t.Fatal(err)
	}
	oldSerial := servedSerial(t, p.Endpoint, f.clientTLS(t, &f.root))

	next, err := f.ca.Issue(pki.Request{CommonName: "server-rotated", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	// Write beside and rename, as an operator (or cert-manager) should, so
	// no handshake reads half a file.
	rotDir := t.TempDir()
	cert, key, err := next.WriteFiles(rotDir, "server")
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{cert: f.server.cert, key: f.server.key} {
		if err := os.Rename(src, dst); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := c.Put(ctx(t), "after", "2"); err != nil {
		t.Fatalf("the connected client failed after the rotation: %v", err)
	}
	newSerial := servedSerial(t, p.Endpoint, f.clientTLS(t, &f.root))
	if newSerial == oldSerial || newSerial != next.Cert.SerialNumber.String() {
		t.Errorf("served certificate serial after rotation = %s (before %s), want %s", newSerial, oldSerial, next.Cert.SerialNumber)
	}
	c2 := tlsClient(t, p.Endpoint, f.clientTLS(t, &f.root))
	if r, err := c2.Get(ctx(t), "", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 2 {
		t.Errorf("a new client after the rotation: %v, %v", r, err)
	}
}

// servedSerial is the serial number of the certificate the server presents
// on a new TLS connection.
func servedSerial(t testing.TB, addr string, cfg *tls.Config) string {
	t.Helper()
	d := &tls.Dialer{Config: cfg}
	dctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestClientAutoTLS: --auto-tls serves https:// with a self-signed
// certificate kept in the data directory, as etcd does.
func TestClientAutoTLS(t *testing.T) {
	p := StartProc(t, ProcOptions{Args: []string{
		"--listen-client-urls", "https://127.0.0.1:0", "--advertise-client-urls", "https://127.0.0.1:0",
		"--auto-tls", "--self-signed-cert-validity", "2",
	}})
	p.CtlArgs = []string{"--insecure-transport=false", "--insecure-skip-tls-verify"}
	p.MustCtl(t, "put", "auto", "tls")
	if out := p.MustCtl(t, "get", "auto", "--print-value-only"); out != "tls\n" {
		t.Errorf("get over auto TLS = %q", out)
	}
	b, err := os.ReadFile(filepath.Join(p.DataDir, "fixtures", "client", "cert.pem"))
	if err != nil {
		t.Fatalf("self-signed certificate not in the data dir: %v", err)
	}
	_ = b
	// Plaintext on the auto-TLS port fails.
	p.CtlArgs = []string{"--dial-timeout=3s", "--command-timeout=5s"}
	if _, _, err := p.Ctl("get", "auto"); err == nil {
		t.Error("plaintext etcdctl on the auto-TLS port succeeded")
	}
}

// TestEtcdctlMatchesEtcdTLS runs the etcdctl session of
// TestEtcdctlMatchesEtcd over mutual TLS (etcdctl --cacert --cert --key):
// the transcript must still equal etcd 3.7.3's.
func TestEtcdctlMatchesEtcdTLS(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "etcdctl_golden.txt"))
	if err != nil {
		t.Fatal(err)
	}
	f := newTLSFixture(t)
	run := func(bin string) string {
		o := ProcOptions{Bin: bin, Args: f.serverArgs()}
		if bin == bins.etcd {
			o.Args = append(o.Args, etcdPeerArgs(t)...)
		}
		p := StartProc(t, o)
		p.CtlArgs = f.ctlArgs(f.root)
		// The golden transcript was recorded with http:// client URLs.
		return strings.ReplaceAll(runCtlScript(t, p), "https://", "http://")
	}
	if bins.etcd != "" {
		t.Run("etcd", func(t *testing.T) {
			if got := run(bins.etcd); got != string(golden) {
				t.Errorf("etcd over TLS differs from the golden transcript:\n%s", lineDiff(string(golden), got))
			}
		})
	}
	t.Run("meshetcd", func(t *testing.T) {
		if got := run(bins.meshetcd); got != string(golden) {
			t.Errorf("meshetcd over TLS differs from etcd's transcript (- etcd, + meshetcd):\n%s", lineDiff(string(golden), got))
		}
	})
}

// etcdPeerArgs gives etcd a fixed peer port (etcd cannot advertise port 0).
func etcdPeerArgs(t testing.TB) []string {
	peer := "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	return []string{"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "m1=" + peer}
}

// TestClientCertCNAsUserMatchesEtcd enables auth and uses client
// certificates instead of passwords, on etcd and meshetcd with the same
// commands: the certificate's CN is the user; a CN naming no user is
// refused; the JSON gateway does not take the CN (etcd ignores the
// gateway's own certificate) and wants a token.
func TestClientCertCNAsUserMatchesEtcd(t *testing.T) {
	f := newTLSFixture(t)
	type step struct {
		as   certPair
		args []string
	}
	steps := []step{
		{f.root, []string{"user", "add", "root", "--new-user-password=rootpw"}},
		{f.root, []string{"role", "add", "reader"}},
		{f.root, []string{"user", "add", "nobody2", "--new-user-password=pw"}},
		{f.root, []string{"auth", "enable"}},
		{f.root, []string{"put", "k", "by-root-cert"}},
		{f.root, []string{"get", "k", "--print-value-only"}},
		{f.nobody, []string{"get", "k"}},
		{f.nobody, []string{"put", "k", "x"}},
		{f.root, []string{"user", "list"}},
		{f.nobody, []string{"--user", "root:rootpw", "get", "k", "--print-value-only"}},
	}
	transcript := func(bin string) (string, string) {
		o := ProcOptions{Bin: bin, Args: f.serverArgs()}
		if bin == bins.etcd {
			o.Args = append(o.Args, etcdPeerArgs(t)...)
		}
		p := StartProc(t, o)
		var b strings.Builder
		for _, st := range steps {
			p.CtlArgs = append(f.ctlArgs(st.as), "--command-timeout=10s")
			out, errOut, err := p.Ctl(st.args...)
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			b.WriteString("$ " + filepath.Base(st.as.cert) + " etcdctl " + strings.Join(st.args, " ") + "\n" + normalizeCtl(out))
			if errOut != "" {
				b.WriteString("stderr: " + normalizeCtl(errOut))
			}
			b.WriteString("exit " + strconv.Itoa(code) + "\n")
		}
		// The gateway with the root certificate and no token.
		hc := &http.Client{Timeout: reqTimeout, Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, &f.root), ForceAttemptHTTP2: true}}
		resp, err := hc.Post("https://"+p.Endpoint+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"aw=="}`))
		if err != nil {
			t.Fatalf("gateway: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return b.String(), resp.Status + " " + string(body)
	}
	got, gotGW := transcript(bins.meshetcd)
	if want := "400 Bad Request CommonName of client sending a request against gateway will be ignored and not used as expected\n"; gotGW != want {
		t.Errorf("gateway with a client certificate and auth on: %q, want etcd's %q", gotGW, want)
	}
	for _, want := range []string{
		"$ root.crt etcdctl put k by-root-cert\nOK\nexit 0\n",
		"$ root.crt etcdctl get k --print-value-only\nby-root-cert\nexit 0\n",
		"$ nobody.crt etcdctl put k x\nstderr: Error: etcdserver: permission denied\nexit 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("meshetcd transcript lacks %q:\n%s", want, got)
		}
	}
	if bins.etcd == "" {
		t.Logf("bin/etcd not found; compared with expectations only:\n%s", got)
		return
	}
	want, wantGW := transcript(bins.etcd)
	if got != want {
		t.Errorf("CN-as-user transcript differs (- etcd, + meshetcd):\n%s", lineDiff(want, got))
	}
	if gotGW != wantGW {
		t.Errorf("gateway with a client certificate and no token:\netcd:     %s\nmeshetcd: %s", wantGW, gotGW)
	}
}

// TestClientTLSOptions covers the flags that narrow who may connect and
// how: a CRL, allowed hostnames, cipher suites and TLS versions, and the
// gateway's own client certificate (--client-cert-file).
func TestClientTLSOptions(t *testing.T) {
	f := newTLSFixture(t)
	connects := func(p *Proc, cfg *tls.Config) error {
		d := &tls.Dialer{Config: cfg}
		dctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
		defer cancel()
		conn, err := d.DialContext(dctx, "tcp", p.Endpoint)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		return nil
	}

	t.Run("crl", func(t *testing.T) {
		crl, err := f.ca.CRL(mustCert(t, f.nobody))
		if err != nil {
			t.Fatal(err)
		}
		crlFile := filepath.Join(f.dir, "ca.crl")
		if err := os.WriteFile(crlFile, crl, 0o644); err != nil {
			t.Fatal(err)
		}
		p := StartProc(t, ProcOptions{Args: f.serverArgs("--client-crl-file", crlFile)})
		if err := connects(p, f.clientTLS(t, &f.root)); err != nil {
			t.Errorf("root (not revoked): %v", err)
		}
		if err := connects(p, f.clientTLS(t, &f.nobody)); err == nil {
			t.Error("a revoked client certificate was accepted")
		}
	})

	t.Run("allowed hostname", func(t *testing.T) {
		named := f.issue(t, f.ca, "named", pki.Request{CommonName: "named", DNSNames: []string{"client.example"}})
		p := StartProc(t, ProcOptions{Args: f.serverArgs("--client-cert-allowed-hostname", "client.example")})
		if err := connects(p, f.clientTLS(t, &named)); err != nil {
			t.Errorf("certificate for client.example: %v", err)
		}
		if err := connects(p, f.clientTLS(t, &f.root)); err == nil {
			t.Error("a certificate not valid for client.example was accepted")
		}
	})

	t.Run("cipher suites and versions", func(t *testing.T) {
		p := StartProc(t, ProcOptions{Args: f.serverArgs("--tls-max-version", "TLS1.2", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")})
		cfg := f.clientTLS(t, &f.root)
		d := &tls.Dialer{Config: cfg}
		conn, err := d.DialContext(ctx(t), "tcp", p.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		st := conn.(*tls.Conn).ConnectionState()
		conn.Close()
		if st.Version != tls.VersionTLS12 || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
			t.Errorf("negotiated %s / %s, want TLS 1.2 / TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		}
		otherSuite := f.clientTLS(t, &f.root)
		otherSuite.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
		if err := connects(p, otherSuite); err == nil {
			t.Error("a client offering only a cipher suite outside --cipher-suites connected")
		}
		only13 := f.clientTLS(t, &f.root)
		only13.MinVersion = tls.VersionTLS13
		if err := connects(p, only13); err == nil {
			t.Error("a TLS 1.3-only client connected to a TLS 1.2-only server")
		}
	})

	t.Run("gateway client certificate", func(t *testing.T) {
		// A server certificate without the client-auth usage cannot be the
		// gateway's client certificate; --client-cert-file supplies one.
		serverOnly := f.issue(t, f.ca, "server-only", pki.Request{CommonName: "server", DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, ServerOnly: true})
		gw := f.issue(t, f.ca, "gateway", pki.Request{})
		hc := &http.Client{Timeout: reqTimeout, Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, &f.root), ForceAttemptHTTP2: true}}
		rangeStatus := func(p *Proc) int {
			resp, err := hc.Post("https://"+p.Endpoint+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"aw=="}`))
			if err != nil {
				t.Fatalf("gateway: %v", err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		p := StartProc(t, ProcOptions{Args: f.serverArgs("--cert-file", serverOnly.cert, "--key-file", serverOnly.key, "--client-cert-file", gw.cert, "--client-key-file", gw.key)})
		if code := rangeStatus(p); code != http.StatusOK {
			t.Errorf("gateway with --client-cert-file: HTTP %d", code)
		}
		p2 := StartProc(t, ProcOptions{Name: "m2", Args: f.serverArgs("--cert-file", serverOnly.cert, "--key-file", serverOnly.key)})
		if code := rangeStatus(p2); code == http.StatusOK {
			t.Error("the gateway reached its port with a server-only certificate; the test proves nothing")
		}
	})
}

func mustCert(t testing.TB, c certPair) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
