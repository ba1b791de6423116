package integration

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/meshetcd/meshetcd/embed"
	"github.com/meshetcd/meshetcd/internal/testutil"
)

// writeJWTKeys writes a fresh key pair for sign-method (RS256 or ES256) as
// the PEM files etcd's --auth-token jwt,pub-key=...,priv-key=... reads and
// returns the --auth-token value.
func writeJWTKeys(t *testing.T, signMethod string) string {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch signMethod {
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("no key type for %s", signMethod)
	}
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=%s,ttl=10m", pubPath, privPath, signMethod)
}

// enableRootAuth creates user root (password "rootpw") with the root role
// and enables authentication.
func enableRootAuth(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	c := ctx(t)
	if _, err := cli.UserAdd(c, "root", "rootpw"); err != nil {
		t.Fatalf("user add: %v", err)
	}
	if _, err := cli.UserGrantRole(c, "root", "root"); err != nil {
		t.Fatalf("grant root: %v", err)
	}
	if _, err := cli.AuthEnable(c); err != nil {
		t.Fatalf("auth enable: %v", err)
	}
}

// putWithToken writes key through member i with a raw token in the gRPC
// metadata, as a client that authenticated elsewhere would send it.
func putWithToken(c *Cluster, i int, token, key string) error {
	cli := c.statusClient(i) // carries no credentials of its own
	tctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), rpctypes.TokenFieldNameGRPC, token), 10*time.Second)
	defer cancel()
	_, err := cli.Put(tctx, key, "v")
	return err
}

// isAuthError reports a refusal of the credentials (not a transient error).
func isAuthError(err error) bool {
	switch rpctypes.Error(err) {
	case rpctypes.ErrInvalidAuthToken, rpctypes.ErrUserEmpty, rpctypes.ErrPermissionDenied, rpctypes.ErrAuthFailed, rpctypes.ErrAuthOldRevision:
		return true
	}
	return false
}

// TestAuthTokenAcrossLeaderChange: a token issued by one member is accepted
// by every member, and keeps working after the leader is killed, for JWT
// (RS256, ES256: signed, so any member verifies it) and for simple tokens
// (etcd applies the authentication through raft, so every member knows the
// token once it applied that entry). A password client keeps working too.
// Run against etcd 3.7.3 as well: same outcome expected.
func TestAuthTokenAcrossLeaderChange(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		for _, kind := range []string{"simple", "RS256", "ES256"} {
			t.Run(kind, func(t *testing.T) {
				if bin == bins.etcd && kind == "ES256" {
					t.Skip("etcd's side is covered by simple and RS256; keeps the test short")
				}
				authToken := "simple"
				if kind != "simple" {
					authToken = writeJWTKeys(t, kind)
				}
				c := StartCluster(t, ClusterOptions{Bin: bin, Args: []string{"--auth-token", authToken}})
				// Status needs credentials once auth is on (as in etcd), so
				// find the leader first.
				leader := c.WaitLeader(t)
				enableRootAuth(t, c.Client(t))

				issuer := follower(c, leader)
				anon := c.statusClient(issuer)
				resp, err := anon.Authenticate(ctx(t), "root", "rootpw")
				if err != nil {
					t.Fatalf("authenticate at member %d: %v", issuer, err)
				}
				token := resp.Token
				if kind != "simple" && len(token) < 100 {
					t.Fatalf("token %q does not look like a JWT", token)
				}
				if err := putWithToken(c, issuer, "bogus-token", "k"); err == nil {
					t.Fatal("a bogus token was accepted")
				}
				for i := range c.Members {
					if err := putWithToken(c, i, token, fmt.Sprintf("before/%d", i)); err != nil {
						t.Fatalf("token issued by member %d refused by member %d: %v", issuer, i, err)
					}
				}
				pw := c.clientCfg(t, clientv3.Config{Username: "root", Password: "rootpw"})
				if _, err := pw.Put(ctx(t), "pw/before", "v"); err != nil {
					t.Fatalf("password client: %v", err)
				}

				c.Kill(leader)
				// The password client's write succeeds once there is a new
				// leader (it re-authenticates if it must: clientv3 does).
				pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for {
					_, err := pw.Put(pctx, "pw/after", "v")
					if err == nil {
						break
					}
					if pctx.Err() != nil {
						t.Fatalf("password client after the leader change: %v", err)
					}
					time.Sleep(100 * time.Millisecond)
				}
				for i := range c.Members {
					if i == leader {
						continue
					}
					for {
						err := putWithToken(c, i, token, fmt.Sprintf("after/%d", i))
						if err == nil {
							break
						}
						if isAuthError(err) || pctx.Err() != nil {
							t.Fatalf("after the leader change, member %d refused the token: %v", i, err)
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
			})
		}
	})
}

// TestAuthTokenBadValues: a bad --auth-token stops the member at start with
// etcd's error ("auth: invalid auth options", exit code 1), with the detail
// (missing file, bad sign method, keys that do not match) in etcd's own
// log line before it. A --bcrypt-cost outside [4, 31] is not an error in
// etcd: it logs a warning and uses 10. Same for both binaries.
func TestAuthTokenBadValues(t *testing.T) {
	rsaA := writeJWTKeys(t, "RS256")
	rsaB := writeJWTKeys(t, "RS256")
	var pubA, privB string
	if _, err := fmt.Sscanf(strings.ReplaceAll(rsaA, ",", " "), "jwt pub-key=%s", &pubA); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscanf(strings.ReplaceAll(rsaB, ",", " "), "jwt pub-key=%s priv-key=%s", new(string), &privB); err != nil {
		t.Fatal(err)
	}
	const invalid = "auth: invalid auth options"
	bad := []struct{ token, err, detail string }{
		{"bogus", invalid, "unknown token type"},
		{"simple,foo", invalid, "invalid token option"},
		{"jwt", invalid, "invalid auth signature method"},
		{"jwt,pub-key=/nonexistent.pub,priv-key=/nonexistent.key,sign-method=RS256", invalid, "no such file or directory"},
		{"jwt,pub-key=" + pubA + ",priv-key=" + privB + ",sign-method=RS256", "auth: public and private keys don't match", "don't match"},
	}
	forEachClusterServer(t, func(t *testing.T, bin string) {
		for _, tc := range bad {
			peer := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
			client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
			code, out := RunOnce(t, bin, nil, "--name", "a", "--data-dir", filepath.Join(t.TempDir(), "a.data"),
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "a="+peer,
				"--auth-token", tc.token)
			if code != 1 || !strings.Contains(out, tc.err) || !strings.Contains(out, tc.detail) {
				t.Errorf("--auth-token %q: exit code %d (want 1), want %q and %q in the output:\n%s", tc.token, code, tc.err, tc.detail, out)
			}
		}
	})

	// bcrypt cost out of range: warned about, default used, member works.
	// (bcrypt itself refuses cost 40, so a working user add shows the
	// fallback.)
	_, p := StartEmbedded(t, func(c *embed.Config) { c.BcryptCost = 40 })
	if _, err := p.Client(t).UserAdd(ctx(t), "u", "pw"); err != nil {
		t.Errorf("user add with --bcrypt-cost 40 (etcd falls back to 10): %v", err)
	}
}

// TestAuthTokenTTL: a simple token unused for --auth-token-ttl seconds is
// refused with etcd's "invalid auth token"; one in use stays valid. Same
// for both binaries.
func TestAuthTokenTTL(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		p := StartProc(t, ProcOptions{Bin: bin, Args: []string{"--auth-token-ttl", "2"}})
		cli := p.Client(t)
		enableRootAuth(t, cli)
		put := func(token string) error {
			tctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), rpctypes.TokenFieldNameGRPC, token), 10*time.Second)
			defer cancel()
			_, err := cli.Put(tctx, "k", "v")
			return err
		}
		idle, err := cli.Authenticate(ctx(t), "root", "rootpw")
		if err != nil {
			t.Fatal(err)
		}
		busy, err := cli.Authenticate(ctx(t), "root", "rootpw")
		if err != nil {
			t.Fatal(err)
		}
		if err := put(idle.Token); err != nil {
			t.Fatalf("fresh token refused: %v", err)
		}
		// Use one token every 500 ms for 4 s (twice the TTL).
		for i := 0; i < 8; i++ {
			time.Sleep(500 * time.Millisecond)
			if err := put(busy.Token); err != nil {
				t.Fatalf("a token in use expired after %v: %v", time.Duration(i+1)*500*time.Millisecond, err)
			}
		}
		if err := put(idle.Token); rpctypes.Error(err) != rpctypes.ErrInvalidAuthToken {
			t.Errorf("token idle for 4s with --auth-token-ttl 2: %v, want %v", err, rpctypes.ErrInvalidAuthToken)
		}
	})
}
