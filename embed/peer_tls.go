package embed

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// peerSecurity chooses how the mesh protects its links, from the peer
// URL scheme, the peer TLS flags, --peer-auto-tls and the mesh secret:
//
//   - https:// with a certificate: mutual X.509 TLS on every link, plus
//     the mesh secret if one is set (a member then needs both);
//     --peer-auto-tls is ignored, as etcd ignores it when certs are given.
//   - otherwise the mesh secret if set, else --peer-auto-tls (ephemeral
//     keys, unauthenticated), else plaintext — but https:// with none of
//     them fails like etcd ("KeyFile and CertFile are not presented").
//   - http:// with certificate files ignores them with etcd's warning.
//
// Bad certificate, key, CA or CRL settings give etcd's errors.
func peerSecurity(cfg *Config, lg *zap.Logger, mc *mesh.Config) error {
	u := cfg.ListenPeerURLs[0]
	haveCert := !cfg.PeerTLSInfo.Empty()
	if u.Scheme == "https" && haveCert {
		info := cfg.PeerTLSInfo
		info.Logger = lg.Named("peer-tls")
		// etcd applies --cipher-suites and --tls-*-version to peers too.
		// Left at etcd's defaults, mesh links stay TLS 1.3 only.
		if len(cfg.CipherSuites) > 0 || cfg.TlsMinVersion != DefaultTLSMinVersion || cfg.TlsMaxVersion != "" {
			if err := cfg.applyTLSOptions(&info); err != nil {
				return err
			}
		}
		tc, err := mesh.NewTLSConfig(info)
		if err != nil {
			return err
		}
		mc.TLS = tc
		mc.Password = cfg.MeshPassword
		if cfg.PeerAutoTLS {
			lg.Warn("ignoring peer auto TLS since certs given")
		}
		lg.Info("starting with peer TLS: every mesh link is mutual TLS", zap.String("tls-info", info.String()),
			zap.Bool("mesh-secret-also-required", cfg.MeshPassword != ""))
		return nil
	}
	if u.Scheme == "http" && haveCert {
		lg.Warn("scheme is HTTP while key and cert files are present; ignoring key and cert files", zap.String("peer-url", u.String()))
	}
	if u.Scheme == "http" && cfg.PeerTLSInfo.ClientCertAuth {
		lg.Warn("scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL", zap.String("peer-url", u.String()))
	}
	switch {
	case cfg.MeshPassword != "":
		mc.Password = cfg.MeshPassword
		if cfg.PeerAutoTLS {
			lg.Info("--peer-auto-tls ignored: the mesh secret takes precedence (it authenticates and encrypts every mesh link)")
		}
	case cfg.PeerAutoTLS:
		mc.EphemeralEncryption = true
		lg.Warn("--peer-auto-tls: mesh links are encrypted with ephemeral keys but NOT authenticated (like etcd's self-signed peer TLS); anyone reaching the peer port can join. Use peer certificates (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file) or a mesh secret (--mesh-password-file or MESHETCD_MESH_PASSWORD) to authenticate members")
	case u.Scheme == "https":
		return fmt.Errorf("cannot listen on TLS for %s: KeyFile and CertFile are not presented", u.Host)
	default:
		mc.InsecurePlaintext = true
	}
	return nil
}
