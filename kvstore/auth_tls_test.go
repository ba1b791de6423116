package kvstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/auth"
)

// tlsPeerCtx is a request context as gRPC builds it for a TLS connection
// whose client presented a verified certificate with common name cn.
func tlsPeerCtx(ctx context.Context, cn string, md metadata.MD) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}})
	return metadata.NewIncomingContext(ctx, md)
}

// TestClientCertAuthUser: with ClientCertAuthEnabled, a request without a
// token is made as its certificate's CN (etcd's AuthInfoFromTLS); a CN
// naming no user is refused; the gateway's proxied requests and plaintext
// connections never get a user from a certificate; without the option the
// CN is ignored.
func TestClientCertAuthUser(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		cfg := testConfig(t, t.TempDir())
		cfg.BcryptCost = bcrypt.MinCost
		cfg.ClientCertAuthEnabled = enabled
		s := startServer(t, cfg)
		ctx := testCtx(t)
		if _, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AuthEnable(ctx, &pb.AuthEnableRequest{}); err != nil {
			t.Fatal(err)
		}
		put := func(ctx context.Context) error {
			_, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
			return err
		}
		rootCert := tlsPeerCtx(ctx, "root", metadata.MD{})
		if err := put(rootCert); enabled && err != nil {
			t.Errorf("put with CN root: %v", err)
		} else if !enabled && !errors.Is(err, auth.ErrUserEmpty) {
			t.Errorf("put with CN root, client cert auth off: %v, want ErrUserEmpty", err)
		}
		if enabled {
			if err := put(tlsPeerCtx(ctx, "nobody", metadata.MD{})); !errors.Is(err, auth.ErrPermissionDenied) {
				t.Errorf("put with CN nobody: %v, want ErrPermissionDenied", err)
			}
			if err := put(tlsPeerCtx(ctx, "root", metadata.Pairs("grpcgateway-accept", "*/*"))); !errors.Is(err, auth.ErrUserEmpty) {
				t.Errorf("gateway put with the gateway's CN root: %v, want ErrUserEmpty", err)
			}
			// A plaintext connection's peer has no TLS information.
			plain := peer.NewContext(ctx, &peer.Peer{})
			if err := put(metadata.NewIncomingContext(plain, metadata.MD{})); !errors.Is(err, auth.ErrUserEmpty) {
				t.Errorf("put over plaintext: %v, want ErrUserEmpty", err)
			}
		}
		s.Stop()
	}
}
