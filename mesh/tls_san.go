package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
)

// reasonSourceAddr: the dialler's certificate does not name the address
// it connects from (etcd's default peer check).
const reasonSourceAddr = "peer certificate does not match its source address"

// withClientSANCheck returns the acceptor's config for one connection from
// remoteAddr: the shared config plus etcd's client SAN check (the
// certificate must name remoteAddr), run inside the handshake so the
// dialler gets a "bad certificate" alert and backs off.
func withClientSANCheck(ctx context.Context, base *tls.Config, remoteAddr string) *tls.Config {
	cfg := base.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		if err := checkCertSAN(ctx, cs.PeerCertificates[0], remoteAddr); err != nil {
			return &certError{reason: reasonSourceAddr, err: err}
		}
		return nil
	}
	return cfg
}

// checkCertSAN is etcd's check of a client certificate against the
// connection's source address (transport.checkCertSAN, unexported there):
// a certificate without IP or DNS SANs passes; otherwise an IP SAN must
// match, or a DNS SAN must resolve to the address (or the address's
// reverse lookup name a DNS SAN or match a wildcard).
func checkCertSAN(ctx context.Context, cert *x509.Certificate, remoteAddr string) error {
	if len(cert.IPAddresses) == 0 && len(cert.DNSNames) == 0 {
		return nil
	}
	h, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return err
	}
	if len(cert.IPAddresses) > 0 {
		cerr := cert.VerifyHostname(h)
		if cerr == nil {
			return nil
		}
		if len(cert.DNSNames) == 0 {
			return cerr
		}
	}
	ok, err := isHostInDNS(ctx, h, cert.DNSNames)
	if ok {
		return nil
	}
	errStr := ""
	if err != nil {
		errStr = " (" + err.Error() + ")"
	}
	return fmt.Errorf("tls: %q does not match any of DNSNames %q"+errStr, h, cert.DNSNames)
}

// isHostInDNS is etcd's transport.isHostInDNS: reverse lookup of host
// against the names and wildcards, then forward lookup of the names.
func isHostInDNS(ctx context.Context, host string, dnsNames []string) (ok bool, err error) {
	var names, wildcards []string
	for _, dns := range dnsNames {
		if strings.HasPrefix(dns, "*.") {
			wildcards = append(wildcards, dns[1:])
		} else {
			names = append(names, dns)
		}
	}
	lnames, lerr := net.DefaultResolver.LookupAddr(ctx, host)
	for _, name := range lnames {
		name = strings.TrimSuffix(name, ".") // PTR records end in '.'
		for _, wc := range wildcards {
			if strings.HasSuffix(name, wc) {
				return true, nil
			}
		}
		for _, n := range names {
			if n == name {
				return true, nil
			}
		}
	}
	err = lerr
	for _, dns := range names {
		addrs, lerr := net.DefaultResolver.LookupHost(ctx, dns)
		if lerr != nil {
			err = lerr
			continue
		}
		for _, addr := range addrs {
			if addr == host {
				return true, nil
			}
		}
	}
	return false, err
}
