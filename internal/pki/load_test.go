package pki

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestWriteKeyLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	keyPath, err := ca.WriteKey(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.Issue(Request{CommonName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	second, err := loaded.Issue(Request{CommonName: "b"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := second.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("a certificate from the loaded CA does not verify against the original: %v", err)
	}
	if first.Cert.SerialNumber.Cmp(second.Cert.SerialNumber) == 0 {
		t.Errorf("the loaded CA reused serial %v", first.Cert.SerialNumber)
	}
	if _, err := LoadCA(certPath, certPath); err == nil {
		t.Error("LoadCA with a certificate as the key succeeded")
	}
}
