package grpcapi

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshetcd/meshetcd/internal/pki"
)

// TestServeTLSSharesPortAndStopsCleanly is TestServeSharesPortAndStopsCleanly
// over mutual TLS: gRPC (including a long-lived stream) and HTTP/1.1 and
// HTTP/2 requests on one TLS port, a client without a certificate refused,
// a connection that never handshakes, and a clean, bounded shutdown.
func TestServeTLSSharesPortAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.Issue(pki.Request{CommonName: "server", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := srvCert.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := ca.Issue(pki.Request{CommonName: "client"})
	if err != nil {
		t.Fatal(err)
	}
	cliCertFile, cliKeyFile, err := cliCert.WriteFiles(dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	clientCfg, err := transport.TLSInfo{CertFile: cliCertFile, KeyFile: cliKeyFile, TrustedCAFile: caFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	noCertCfg, err := transport.TLSInfo{TrustedCAFile: caFile}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}

	base := runtime.NumGoroutine()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	gs, h := minimalServers()
	info := &transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeTLS(ctx, l, gs, h, info, 100) }()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientCfg)))
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), testTimeout)
	defer ccancel()
	hr, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health over TLS: %v %v", err, hr)
	}
	wst, err := healthpb.NewHealthClient(conn).Watch(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wst.Recv(); err != nil {
		t.Fatal(err)
	}
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: clientCfg.Clone(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		hc := &http.Client{Timeout: testTimeout, Transport: tr}
		resp, err := hc.Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("https (h2=%v): %v", h2, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello" {
			t.Fatalf("https (h2=%v): %q", h2, b)
		}
		hc.CloseIdleConnections()
	}
	noCert := &http.Client{Timeout: testTimeout, Transport: &http.Transport{TLSClientConfig: noCertCfg}}
	if resp, err := noCert.Get("https://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	cancelAndWaitClosed(t, "ServeTLS", cancel, done, addr)
	conn.Close()
	idle.Close()
	noCert.CloseIdleConnections()
	waitGoroutines(t, base)
}

func TestServeTLSBadFiles(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, h := minimalServers()
	info := &transport.TLSInfo{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}
	if err := ServeTLS(context.Background(), l, gs, h, info, 100); err == nil {
		t.Fatal("ServeTLS with missing files succeeded")
	}
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("ServeTLS left the listener open after failing")
	}
}
