// Command gencerts makes the certificates to secure a meshetcd (or etcd)
// cluster, without openssl: a CA, one certificate per member (server and
// client use, for the client port and the peer/mesh port alike) and one
// client certificate per user (its CN is the user name with
// --client-cert-auth).
//
//	go run ./scripts/gencerts -out certs -hosts 127.0.0.1,localhost -members m1,m2,m3 -clients root
//
// writes certs/ca.crt, certs/ca.key, certs/m1.crt, certs/m1.key, ...,
// certs/root.crt, certs/root.key. When -out already holds ca.crt and
// ca.key, that CA is reused: running it again for some members or clients
// replaces their files with fresh certificates from the same CA (each file
// is replaced atomically), which is how a certificate is rotated; members
// pick the new files up on their next TLS handshake, without a restart.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshetcd/meshetcd/internal/pki"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gencerts", flag.ContinueOnError)
	dir := fs.String("out", "", "directory for the files (created if missing; an existing ca.crt/ca.key there is reused)")
	hosts := fs.String("hosts", "127.0.0.1,localhost", "comma-separated IP addresses and DNS names every member certificate is valid for")
	members := fs.String("members", "", "comma-separated member names: one server+client certificate each (CN = name, plus the name as a DNS name)")
	clients := fs.String("clients", "", "comma-separated user names: one client certificate each (CN = user, for --client-cert-auth)")
	days := fs.Int("days", 365, "validity of the member and client certificates, in days")
	keyType := fs.String("key", "ecdsa", "key type of the issued certificates: ecdsa (P-256) or rsa (2048 bits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-out DIR is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *days <= 0 {
		return fmt.Errorf("-days must be > 0 (got %d)", *days)
	}
	kt := pki.KeyType(*keyType)
	if kt != pki.ECDSA && kt != pki.RSA {
		return fmt.Errorf("-key %q: want ecdsa or rsa", *keyType)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	ca, err := loadOrCreateCA(*dir, out)
	if err != nil {
		return err
	}

	var ips []net.IP
	var dns []string
	for _, h := range split(*hosts) {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	notAfter := time.Now().Add(time.Duration(*days) * 24 * time.Hour)
	for _, m := range split(*members) {
		req := pki.Request{CommonName: m, DNSNames: append([]string{m}, dns...), IPs: ips, NotAfter: notAfter, Key: kt}
		if err := issue(ca, req, *dir, m, out); err != nil {
			return err
		}
	}
	for _, c := range split(*clients) {
		if err := issue(ca, pki.Request{CommonName: c, NotAfter: notAfter, Key: kt}, *dir, c, out); err != nil {
			return err
		}
	}
	return nil
}

func loadOrCreateCA(dir string, out io.Writer) (*pki.CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := pki.LoadCA(certPath, keyPath)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "reusing CA %s\n", certPath)
		return ca, nil
	case certErr == nil || keyErr == nil:
		return nil, fmt.Errorf("%s holds only one of ca.crt and ca.key; give both or neither", dir)
	}
	ca, err := pki.NewCA("meshetcd CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if _, err := ca.WriteCA(dir, "ca"); err != nil {
		return nil, err
	}
	if _, err := ca.WriteKey(dir, "ca"); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "wrote CA %s (keep %s secret)\n", certPath, keyPath)
	return ca, nil
}

// issue writes name.crt and name.key into dir, replacing existing files
// atomically (written beside, then renamed), so a member that reads them
// for a handshake never sees half a file.
func issue(ca *pki.CA, req pki.Request, dir, name string, out io.Writer) error {
	iss, err := ca.Issue(req)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, ".gencerts-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	certTmp, keyTmp, err := iss.WriteFiles(tmp, name)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	// The key first: a handshake between the renames pairs the old
	// certificate with the new key and fails, rather than serving a
	// certificate whose key is gone; it is retried by the client.
	if err := os.Rename(keyTmp, keyPath); err != nil {
		return err
	}
	if err := os.Rename(certTmp, certPath); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s and %s (CN=%s, serial %s, valid until %s)\n", certPath, keyPath, req.CommonName, iss.Cert.SerialNumber, iss.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
