package embed

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// TestStartMemberAutoTLS: an https:// client URL with ClientAutoTLS serves
// TLS with a self-signed certificate under <data-dir>/fixtures/client, the
// advertised URL keeps its https scheme and resolved port, and
// Member.Client talks TLS to it.
func TestStartMemberAutoTLS(t *testing.T) {
	cfg, logs := testConfig(t)
	u := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{u}, []url.URL{u}
	cfg.ClientAutoTLS = true
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatalf("StartMember: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if n := logs.FilterMessage("serving client traffic securely").Len(); n != 1 {
		t.Errorf("%d 'serving client traffic securely' lines, want 1", n)
	}
	adv := m.ClientURLs()[0]
	if adv.Scheme != "https" || adv.Host != m.ListenClientURLs()[0].Host {
		t.Errorf("advertised %s, listening on %s", adv.String(), m.ListenClientURLs()[0].String())
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "fixtures", "client", "cert.pem")); err != nil {
		t.Errorf("self-signed certificate: %v", err)
	}
	c, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(startCtx(t), "k", "v"); err != nil {
		t.Fatalf("put over auto TLS: %v", err)
	}
}
