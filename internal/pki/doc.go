// Package pki issues X.509 certificate authorities, certificates and
// certificate revocation lists, and writes them as the PEM and DER files
// that etcd's TLS flags read (--cert-file, --key-file, --trusted-ca-file,
// --client-crl-file, and their --peer-* twins).
//
// It exists for two users: tests that need certificates with chosen names,
// lifetimes and revocations (a foreign CA, an expired or revoked member, a
// disallowed common name), and scripts/gencerts, which an operator runs to
// secure a cluster without learning openssl. It never serves anything: the
// TLS listeners and checks are etcd's client/pkg/v3/transport.
package pki
