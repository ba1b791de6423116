package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
)

// WriteKey writes the CA's private key to dir/name.key (mode 0600) and
// returns the path, so that LoadCA can issue more certificates from the
// same CA later (rotation, new members).
func (ca *CA) WriteKey(dir, name string) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return "", fmt.Errorf("pki: marshal CA key: %w", err)
	}
	path := filepath.Join(dir, name+".key")
	if err := os.WriteFile(path, pemBlock("PRIVATE KEY", der), 0o600); err != nil {
		return "", fmt.Errorf("pki: %w", err)
	}
	return path, nil
}

// LoadCA reads a CA written by WriteCA and WriteKey. Serial numbers of the
// certificates it issues start at a random point, so they do not repeat
// those issued before (a CRL names certificates by serial).
func LoadCA(certPath, keyPath string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: CA key cannot sign")
	}
	start, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("pki: random serial: %w", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: key, serial: start.Int64()}, nil
}
