package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// meshALPN is the application protocol both ends of a mesh TLS link
// announce, so an HTTPS client that reaches the peer port fails the TLS
// handshake instead of talking to the mesh framing.
const meshALPN = "meshetcd-mesh/2"

// ErrPeerCertificate is a TLS link refused over certificates: a foreign
// CA, an expired or revoked certificate, a CN or hostname outside the
// allowed ones, no certificate at all, or the remote refusing ours. The
// error's text and Status().HandshakeFailures give the precise reason.
var ErrPeerCertificate = errors.New("mesh: peer certificate refused")

// Encryption kinds reported in Status for TLS links.
const (
	EncryptionTLS    = "tls"     // mutual X.509 TLS, mesh framing in plaintext inside it
	EncryptionTLSPSK = "tls+psk" // mutual X.509 TLS and the mesh secret: both must match
)

// TLSConfig makes every mesh connection a TLS connection: the dialling
// side is the TLS client, the accepting side the TLS server. Build it with
// NewTLSConfig from etcd's peer TLS settings.
type TLSConfig struct {
	// Server is used on accepted connections, Client on dialled ones;
	// Client's ServerName is set per dial to the dialled host, so the
	// acceptor's certificate must name the address we dial (IP or DNS
	// SAN), as with etcd's peer client.
	Server, Client *tls.Config
	// CheckClientSAN makes the acceptor check that the dialler's
	// certificate names the address it connects from (an IP SAN, or a DNS
	// SAN resolving to it): etcd's default peer check, which
	// --peer-skip-client-san-verification (TLSInfo.SkipClientSANVerify)
	// turns off. NewTLSConfig sets it from the TLSInfo.
	CheckClientSAN bool
}

// NewTLSConfig turns etcd's peer TLS settings (--peer-cert-file,
// --peer-key-file, --peer-trusted-ca-file, --peer-client-cert-auth,
// --peer-crl-file, --peer-cert-allowed-cn, --peer-cert-allowed-hostname,
// --peer-client-cert-file/--peer-client-key-file, cipher suites and TLS
// versions) into a mesh TLSConfig. It uses etcd's own ServerConfig and
// ClientConfig, so certificates are re-read on every handshake (rotation
// without restart) and the CN/hostname checks are etcd's; the CRL check
// is etcd's ConfigureCRLVerification, applied on both ends. Without an
// explicit version range or cipher suites links use TLS 1.3 only.
func NewTLSConfig(info transport.TLSInfo) (*TLSConfig, error) {
	if info.Empty() {
		return nil, fmt.Errorf("mesh: peer TLS needs a certificate and a key (KeyFile and CertFile must both be present[key: %v, cert: %v])", info.KeyFile, info.CertFile)
	}
	server, err := info.ServerConfig()
	if err != nil {
		return nil, err
	}
	client, err := info.ClientConfig()
	if err != nil {
		return nil, err
	}
	for _, cfg := range []*tls.Config{server, client} {
		cfg.NextProtos = []string{meshALPN}
		// Only meshetcd speaks to this port, so TLS 1.3 by default; an
		// explicit version range or TLS 1.2 cipher suites keep etcd's rules.
		if info.MinVersion == 0 && len(info.CipherSuites) == 0 && (info.MaxVersion == 0 || info.MaxVersion >= tls.VersionTLS13) {
			cfg.MinVersion = tls.VersionTLS13
		}
		labelVerifyErrors(cfg)
		info.ConfigureCRLVerification(cfg)
		labelCRLErrors(cfg)
	}
	return &TLSConfig{Server: server, Client: client, CheckClientSAN: !info.SkipClientSANVerify}, nil
}

// certError is a certificate refusal with its short reason.
type certError struct {
	reason string
	err    error
}

func (e *certError) Error() string {
	return fmt.Sprintf("%v (%s): %v", ErrPeerCertificate, e.reason, e.err)
}
func (e *certError) Unwrap() error        { return e.err }
func (e *certError) Is(target error) bool { return target == ErrPeerCertificate }

// Short reasons of certificate refusals, as logged and listed in
// Status().HandshakeFailures.
const (
	reasonUnknownCA    = "peer certificate signed by an unknown CA"
	reasonExpired      = "peer certificate expired or not yet valid"
	reasonHostname     = "peer certificate does not match the dialled address"
	reasonRevoked      = "peer certificate revoked (CRL)"
	reasonNotAllowed   = "peer certificate CN/hostname not allowed"
	reasonNoCert       = "peer presented no certificate"
	reasonRemoteRefuse = "remote refused our certificate"
	reasonBadCert      = "peer certificate invalid"
)

// labelVerifyErrors marks failures of etcd's AllowedCN/AllowedHostname
// check, which etcd reports only as a plain string.
func labelVerifyErrors(cfg *tls.Config) {
	prev := cfg.VerifyPeerCertificate
	if prev == nil {
		return
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := prev(raw, chains); err != nil {
			return &certError{reason: reasonNotAllowed, err: err}
		}
		return nil
	}
}

// labelCRLErrors marks failures of etcd's CRL check (the only
// VerifyConnection hook on the config).
func labelCRLErrors(cfg *tls.Config) {
	prev := cfg.VerifyConnection
	if prev == nil {
		return
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := prev(cs); err != nil {
			return &certError{reason: reasonRevoked, err: err}
		}
		return nil
	}
}

// secureLink runs the TLS handshake on nc when the mesh uses TLS and
// returns the connection to run the mesh handshake on. nc must be reserved
// with reserveHandshake; on success the reservation moves to the TLS
// connection, on failure it stays on nc.
func (r *Router) secureLink(nc net.Conn, outbound bool, addr string) (net.Conn, error) {
	if r.cfg.TLS == nil {
		return nc, nil
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandshakeTimeout)
	defer cancel()
	var tc *tls.Conn
	switch {
	case outbound:
		cfg := r.cfg.TLS.Client.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = remoteHost(addr)
		}
		tc = tls.Client(nc, cfg)
	case r.cfg.TLS.CheckClientSAN:
		tc = tls.Server(nc, withClientSANCheck(ctx, r.cfg.TLS.Server, nc.RemoteAddr().String()))
	default:
		tc = tls.Server(nc, r.cfg.TLS.Server)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nc, classifyTLSError(err)
	}
	link := &tlsLink{Conn: tc, raw: nc}
	r.conns.rekey(nc, link)
	return link, nil
}

// tlsLink is a mesh connection inside TLS. Close closes the TCP connection
// at once, without TLS's close_notify alert: tls.Conn.Close writes the alert
// with a 5 s deadline when no write is in flight, which to a peer that
// stopped reading would delay declaring the link dead (and rerouting) by
// up to 5 s. The mesh's goodbye frame already ends links gracefully.
type tlsLink struct {
	*tls.Conn
	raw net.Conn
}

func (l *tlsLink) Close() error { return l.raw.Close() }

// classifyTLSError turns a TLS failure into a refusal the connection maker
// backs off from (ErrPeerCertificate, or ErrEncryptionMismatch when the
// remote does not speak TLS), or returns it unchanged (timeouts, resets).
// With TLS 1.3 the dialler learns that the acceptor refused its
// certificate only on its first read, inside the mesh handshake, so this
// also runs on mesh handshake errors of TLS links.
func classifyTLSError(err error) error {
	if err == nil {
		return nil
	}
	var ce *certError
	if errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, ErrEncryptionMismatch) {
		// The preamble inside TLS says "plaintext" for TLS alone.
		return fmt.Errorf("%w (both use TLS; only one also has the mesh secret)", err)
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		invalid    x509.CertificateInvalidError
		hostname   x509.HostnameError
		recordErr  tls.RecordHeaderError
		opErr      *net.OpError
		verifyErr  *tls.CertificateVerificationError
		reason     string
		mismatched bool
	)
	switch {
	case errors.As(err, &unknownCA):
		reason = reasonUnknownCA
	case errors.As(err, &invalid):
		reason = reasonBadCert
		if invalid.Reason == x509.Expired {
			reason = reasonExpired
		}
	case errors.As(err, &hostname):
		reason = reasonHostname
	case errors.As(err, &verifyErr):
		reason = reasonBadCert
	case errors.As(err, &recordErr):
		mismatched = true
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// The alert the remote sent: it refused our certificate, or the
		// handshake for another reason (versions, ALPN), named in the alert.
		reason = reasonRemoteRefuse
		if !strings.Contains(opErr.Err.Error(), "certificate") {
			reason = "remote refused the TLS handshake"
		}
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		reason = reasonNoCert
	case strings.Contains(err.Error(), "no application protocol"), strings.Contains(err.Error(), "protocol version"):
		reason = "TLS parameters mismatch"
	default:
		return err
	}
	if mismatched {
		return fmt.Errorf("%w: the remote does not speak TLS (is it running without peer certificates?): %v", ErrEncryptionMismatch, err)
	}
	return &certError{reason: reason, err: err}
}

// linkEncryption is the Status name of a connection's protection.
func linkEncryption(nc net.Conn, mode uint8) string {
	if _, ok := nc.(*tlsLink); ok {
		if mode == modeEncrypted {
			return EncryptionTLSPSK
		}
		return EncryptionTLS
	}
	return encryptionKind(mode)
}

// certRefusalReason is the short reason of a certificate refusal.
func certRefusalReason(err error) string {
	var ce *certError
	if errors.As(err, &ce) {
		return ce.reason
	}
	return "peer certificate refused"
}
