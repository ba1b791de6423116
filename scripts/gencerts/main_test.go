package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGencertsIssuesAndRotates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out strings.Builder
	if err := run([]string{"-out", dir, "-hosts", "127.0.0.1,localhost", "-members", "m1,m2", "-clients", "root"}, &out); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	load := func(name string) *x509.Certificate {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	m1 := load("m1")
	if _, err := m1.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("m1 as a server for localhost: %v", err)
	}
	if err := m1.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("m1 for 127.0.0.1: %v", err)
	}
	root := load("root")
	if root.Subject.CommonName != "root" {
		t.Errorf("client CN = %q", root.Subject.CommonName)
	}
	if _, err := root.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("root as a client: %v", err)
	}

	// Again: the CA is reused, m1 gets a new certificate from it.
	out.Reset()
	if err := run([]string{"-out", dir, "-members", "m1"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "reusing CA") {
		t.Errorf("second run did not reuse the CA:\n%s", out.String())
	}
	rotated := load("m1")
	if rotated.SerialNumber.Cmp(m1.SerialNumber) == 0 {
		t.Error("m1 was not reissued")
	}
	if _, err := rotated.Verify(x509.VerifyOptions{Roots: pool, DNSName: "m1"}); err != nil {
		t.Errorf("rotated m1 does not verify against the same CA: %v", err)
	}

	for _, args := range [][]string{{}, {"-out", dir, "-key", "dsa"}, {"-out", dir, "-days", "0"}, {"-out", dir, "stray"}} {
		if err := run(args, &out); err == nil {
			t.Errorf("run(%v) succeeded", args)
		}
	}
}
