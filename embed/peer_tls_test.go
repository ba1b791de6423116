package embed

import (
	"net"
	"net/url"
	"strings"
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshetcd/meshetcd/internal/pki"
)

func peerTLSTestConfig(scheme string) Config {
	cfg := NewConfig()
	cfg.Name = "a"
	cfg.ListenPeerURLs = []url.URL{{Scheme: scheme, Host: "127.0.0.1:2380"}}
	cfg.AdvertisePeerURLs = []url.URL{{Scheme: scheme, Host: "127.0.0.1:2380"}}
	cfg.InitialCluster = "a=" + scheme + "://127.0.0.1:2380"
	return cfg
}

func TestPeerSecurityModes(t *testing.T) {
	ca, err := pki.NewCA("ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Issue(pki.Request{CommonName: "a", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := iss.WriteFiles(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	good := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true}

	// https:// peer URLs validate, with or without certificates.
	for _, scheme := range []string{"http", "https"} {
		cfg := peerTLSTestConfig(scheme)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s peer URLs: %v", scheme, err)
		}
	}

	for _, tc := range []struct {
		name             string
		scheme           string
		info             transport.TLSInfo
		password         string
		autoTLS          bool
		wantTLS          bool
		wantPassword     bool
		wantEphemeral    bool
		wantPlaintext    bool
		wantErr, wantLog string
	}{
		{name: "certificates", scheme: "https", info: good, wantTLS: true},
		{name: "certificates and secret", scheme: "https", info: good, password: "s", wantTLS: true, wantPassword: true},
		{name: "certificates win over auto TLS", scheme: "https", info: good, autoTLS: true, wantTLS: true, wantLog: "ignoring peer auto TLS since certs given"},
		{name: "auto TLS", scheme: "https", autoTLS: true, wantEphemeral: true},
		{name: "secret", scheme: "https", password: "s", wantPassword: true},
		{name: "http ignores certificates", scheme: "http", info: good, wantPlaintext: true, wantLog: "ignoring key and cert files"},
		{name: "https without anything", scheme: "https", wantErr: "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"},
		{name: "cert without key", scheme: "https", info: transport.TLSInfo{CertFile: certFile}, wantErr: "KeyFile and CertFile must both be present[key: , cert: " + certFile + "]"},
		{name: "missing files", scheme: "https", info: transport.TLSInfo{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}, wantErr: "open /nonexistent.crt: no such file or directory"},
		{name: "mismatched key", scheme: "https", info: transport.TLSInfo{CertFile: certFile, KeyFile: caFile}, wantErr: "tls:"},
		{name: "missing CA", scheme: "https", info: transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: "/nonexistent-ca.crt"}, wantErr: "open /nonexistent-ca.crt"},
		{name: "CN and hostname lists", scheme: "https", info: transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, AllowedCNs: []string{"a"}, AllowedHostnames: []string{"b"}}, wantErr: "AllowedCNs and AllowedHostnames are mutually exclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := peerTLSTestConfig(tc.scheme)
			cfg.PeerTLSInfo, cfg.MeshPassword, cfg.PeerAutoTLS = tc.info, tc.password, tc.autoTLS
			core, logs := observer.New(zap.InfoLevel)
			mc, err := routerConfig(&cfg, zap.New(core), map[string][]string{"a": {tc.scheme + "://127.0.0.1:2380"}}, 0)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (mc.TLS != nil) != tc.wantTLS || (mc.Password != "") != tc.wantPassword || mc.EphemeralEncryption != tc.wantEphemeral || mc.InsecurePlaintext != tc.wantPlaintext {
				t.Errorf("tls %v password %q ephemeral %v plaintext %v", mc.TLS != nil, mc.Password, mc.EphemeralEncryption, mc.InsecurePlaintext)
			}
			if tc.wantLog != "" && logs.FilterMessageSnippet(tc.wantLog).Len() != 1 {
				t.Errorf("no log line %q", tc.wantLog)
			}
		})
	}
}
