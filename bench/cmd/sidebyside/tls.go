package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/meshetcd/meshetcd/internal/pki"
)

// tlsFiles are the certificates a --tls run gives both systems: one CA, one
// server certificate for 127.0.0.1 that every member of either system
// uses, and a client certificate for the benchmark tool and the driver
// (mutual TLS: the servers run with --client-cert-auth).
type tlsFiles struct {
	ca, cert, key, clientCert, clientKey string
}

// newTLSFiles issues the certificates into dir (ECDSA P-256, as etcd's own
// auto TLS uses).
func newTLSFiles(dir string) (*tlsFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.NewCA("sidebyside benchmark CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	t := &tlsFiles{}
	if t.ca, err = ca.WriteCA(dir, "ca"); err != nil {
		return nil, err
	}
	srv, err := ca.Issue(pki.Request{CommonName: "server", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return nil, err
	}
	if t.cert, t.key, err = srv.WriteFiles(dir, "server"); err != nil {
		return nil, err
	}
	cli, err := ca.Issue(pki.Request{CommonName: "benchmark"})
	if err != nil {
		return nil, err
	}
	if t.clientCert, t.clientKey, err = cli.WriteFiles(dir, "client"); err != nil {
		return nil, err
	}
	return t, nil
}

// serverArgs are the flags every member of both systems gets.
func (t *tlsFiles) serverArgs() []string {
	if t == nil {
		return nil
	}
	return []string{"--cert-file", t.cert, "--key-file", t.key, "--trusted-ca-file", t.ca, "--client-cert-auth"}
}

// toolArgs are the benchmark tool's TLS flags.
func (t *tlsFiles) toolArgs() []string {
	if t == nil {
		return nil
	}
	return []string{"--cacert=" + t.ca, "--cert=" + t.clientCert, "--key=" + t.clientKey}
}

// scheme of the client URLs.
func (t *tlsFiles) scheme() string {
	if t == nil {
		return "http"
	}
	return "https"
}

// clientConfig is the driver's own TLS client configuration (nil without
// TLS), built by etcd's transport as clientv3 users do.
func (t *tlsFiles) clientConfig() (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: t.clientCert, KeyFile: t.clientKey, TrustedCAFile: t.ca}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("client TLS config: %w", err)
	}
	return c, nil
}

// describe is the line in results.md.
func (t *tlsFiles) describe() string {
	return fmt.Sprintf("client TLS (https:// client URLs, mutual TLS): both systems run with `%s`; the tool with `%s` (certificates in %s, deleted after the run)",
		"--cert-file --key-file --trusted-ca-file --client-cert-auth", "--cacert --cert --key", filepath.Dir(t.ca))
}
