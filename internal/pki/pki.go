package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// KeyType selects the private key algorithm of an issued certificate.
type KeyType string

const (
	// ECDSA is a P-256 key (the default: small and fast).
	ECDSA KeyType = "ecdsa"
	// RSA is a 2048-bit RSA key.
	RSA KeyType = "rsa"
)

// CA is a certificate authority that issues certificates and CRLs.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer

	mu     sync.Mutex
	serial int64
}

// NewCA creates a self-signed CA named commonName, valid from an hour ago
// (clock skew) for validity.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	key, err := newKey(ECDSA)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"meshetcd"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key, serial: 1}, nil
}

// Request describes a certificate to issue.
type Request struct {
	// CommonName is the subject CN: etcd's user name with --client-cert-auth,
	// matched by --peer-cert-allowed-cn.
	CommonName string
	// DNSNames and IPs are the subject alternative names a client verifies
	// (and --*-cert-allowed-hostname matches).
	DNSNames []string
	IPs      []net.IP
	// NotBefore and NotAfter default to an hour ago and a year from now.
	// Set both in the past to issue an expired certificate.
	NotBefore, NotAfter time.Time
	// Key defaults to ECDSA.
	Key KeyType
	// ServerOnly leaves out the client-auth extended key usage (by default
	// a certificate serves both ends, as etcd's peer certificates must).
	ServerOnly bool
}

// Issued is a certificate with its private key.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a certificate for req.
func (ca *CA) Issue(req Request) (*Issued, error) {
	key, err := newKey(req.Key)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notBefore, notAfter := req.NotBefore, req.NotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(365 * 24 * time.Hour)
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if req.ServerOnly {
		usages = usages[:1]
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: []string{"meshetcd"}},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %q: %w", req.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse %q: %w", req.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal key of %q: %w", req.CommonName, err)
	}
	return &Issued{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}, nil
}

// CRL returns a DER certificate revocation list, as etcd's --client-crl-file
// and --peer-crl-file expect, that revokes the given certificates.
func (ca *CA) CRL(revoked ...*x509.Certificate) ([]byte, error) {
	now := time.Now()
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)})
	}
	ca.mu.Lock()
	ca.serial++
	number := ca.serial
	ca.mu.Unlock()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                now.Add(-time.Minute),
		NextUpdate:                now.Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CRL: %w", err)
	}
	return der, nil
}

// WriteCA writes the CA certificate to dir/name.crt and returns the path.
func (ca *CA) WriteCA(dir, name string) (string, error) {
	path := filepath.Join(dir, name+".crt")
	if err := os.WriteFile(path, ca.CertPEM, 0o644); err != nil {
		return "", fmt.Errorf("pki: %w", err)
	}
	return path, nil
}

// WriteFiles writes the certificate to dir/name.crt and its key to
// dir/name.key (mode 0600) and returns both paths.
func (iss *Issued) WriteFiles(dir, name string) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, iss.CertPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	if err := os.WriteFile(keyPath, iss.KeyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	return certPath, keyPath, nil
}

func newKey(kind KeyType) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch kind {
	case "", ECDSA:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, errors.New("pki: unknown key type " + string(kind))
	}
	if err != nil {
		return nil, fmt.Errorf("pki: generate %s key: %w", kind, err)
	}
	return key, nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
