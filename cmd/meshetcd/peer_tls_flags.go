package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshetcd/meshetcd/embed"
)

// addPeerTLSFlags registers etcd's peer TLS flags (names, defaults and
// help as in etcd 3.7) into cfg.PeerTLSInfo. The returned function must
// run after parsing: it sets the comma-separated lists the way etcdmain
// does (flags.StringsFromFlag: split on ",", nothing when unset).
func addPeerTLSFlags(fs *pflag.FlagSet, cfg *embed.Config) (finish func()) {
	fs.StringVar(&cfg.PeerTLSInfo.CertFile, "peer-cert-file", "", "Path to the peer server TLS cert file. With https:// peer URLs every mesh link is mutual TLS.")
	fs.StringVar(&cfg.PeerTLSInfo.KeyFile, "peer-key-file", "", "Path to the peer server TLS key file.")
	fs.StringVar(&cfg.PeerTLSInfo.ClientCertFile, "peer-client-cert-file", "", "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required.")
	fs.StringVar(&cfg.PeerTLSInfo.ClientKeyFile, "peer-client-key-file", "", "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required.")
	fs.BoolVar(&cfg.PeerTLSInfo.ClientCertAuth, "peer-client-cert-auth", false, "Enable peer client cert authentication.")
	fs.StringVar(&cfg.PeerTLSInfo.TrustedCAFile, "peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file.")
	fs.StringVar(&cfg.PeerTLSInfo.CRLFile, "peer-crl-file", "", "Path to the peer certificate revocation list file.")
	fs.BoolVar(&cfg.PeerTLSInfo.SkipClientSANVerify, "peer-skip-client-san-verification", false, "Skip verification of SAN field in client certificate for peer connections.")
	var allowedCNs, allowedHostnames string
	fs.StringVar(&allowedCNs, "peer-cert-allowed-cn", "", "Comma-separated list of allowed CNs for inter-peer TLS authentication.")
	fs.StringVar(&allowedHostnames, "peer-cert-allowed-hostname", "", "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.")
	return func() {
		if allowedCNs != "" {
			cfg.PeerTLSInfo.AllowedCNs = strings.Split(allowedCNs, ",")
		}
		if allowedHostnames != "" {
			cfg.PeerTLSInfo.AllowedHostnames = strings.Split(allowedHostnames, ",")
		}
	}
}
