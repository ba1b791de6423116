package embed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/meshetcd/meshetcd/internal/pki"
)

// TestListenMetricsURLs: --listen-metrics-urls serves /metrics and the
// health endpoints only (etcd's serveMetrics), plaintext on http:// and
// TLS with the client certificate on https://; a plaintext request to the
// TLS port gets no metrics (no silent downgrade).
func TestListenMetricsURLs(t *testing.T) {
	ca, err := pki.NewCA("metrics-test-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(pki.Request{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := srv.WriteFiles(t.TempDir(), "server")
	if err != nil {
		t.Fatal(err)
	}

	cfg, _ := testConfig(t)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: certFile, KeyFile: keyFile}
	cfg.ListenMetricsURLs = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}, {Scheme: "https", Host: "127.0.0.1:0"}}
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatalf("StartMember: %v", err)
	}
	defer m.Close()
	murls := m.MetricsURLs()
	if len(murls) != 2 || murls[0].Port() == "0" || murls[1].Scheme != "https" {
		t.Fatalf("MetricsURLs() = %v", murls)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	plainClient := &http.Client{Timeout: 10 * time.Second}
	get := func(c *http.Client, u string) (int, string, error) {
		resp, err := c.Get(u)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for i, c := range []*http.Client{plainClient, tlsClient} {
		base := murls[i].String()
		for path, want := range map[string]string{"/metrics": "etcd_mvcc_db_total_size_in_bytes", "/health": `"health":"true"`, "/readyz": "ok"} {
			code, body, err := get(c, base+path)
			if err != nil || code != 200 || !strings.Contains(body, want) {
				t.Errorf("GET %s%s: %d %v, body lacks %q: %.200s", base, path, code, err, want, body)
			}
		}
		// Only metrics and health, as in etcd: no KV gateway, no version.
		for _, path := range []string{"/version", "/v3/kv/range"} {
			if code, _, err := get(c, base+path); err != nil || code != 404 {
				t.Errorf("GET %s%s: %d %v, want 404", base, path, code, err)
			}
		}
	}
	// Plaintext HTTP to the TLS port: the server answers with a TLS error
	// or a 400, never the metrics.
	plainToTLS := "http://" + murls[1].Host + "/metrics"
	if code, body, err := get(plainClient, plainToTLS); err == nil && (code == 200 || strings.Contains(body, "etcd_server")) {
		t.Errorf("GET %s served metrics in plaintext: %d", plainToTLS, code)
	}
	// A client that does not trust the CA is refused.
	if _, _, err := get(&http.Client{Timeout: 10 * time.Second}, murls[1].String()+"/metrics"); err == nil {
		t.Errorf("a client without the CA got through")
	}
}

func TestListenMetricsHTTPSNeedsClientCert(t *testing.T) {
	cfg, _ := testConfig(t)
	cfg.ListenMetricsURLs = []url.URL{{Scheme: "https", Host: "127.0.0.1:0"}}
	m, err := StartMember(startCtx(t), cfg)
	if err == nil {
		m.Close()
		t.Fatal("https metrics URL without a client certificate started")
	}
	if !errors.Is(err, ErrMissingClientTLSInfoForMetricsURL) {
		t.Errorf("error %v, want etcd's %v", err, ErrMissingClientTLSInfoForMetricsURL)
	}
}
