package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "etcd.conf.yml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsConfig(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `
name: m1
data-dir: /var/lib/m1
listen-client-urls: http://127.0.0.1:26101,http://127.0.0.1:26102
listen-peer-urls: http://127.0.0.1:26180
initial-advertise-peer-urls: http://127.0.0.1:26180
initial-cluster: m1=http://127.0.0.1:26180
heartbeat-interval: 200
election-timeout: 2000
quota-backend-bytes: 8589934592
grpc-keepalive-interval: 3600000000000
grpc-keepalive-timeout: 30s
log-outputs: [stderr, stdout]
listen-metrics-urls: http://127.0.0.1:26190
auth-token: jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256
auth-token-ttl: 60
bcrypt-cost: 12
no-such-key: 1
peers: 127.0.0.1:26280,127.0.0.1:26380
join-timeout: 15s
mesh-password-file: `+secret+`
`)
	o := mustParse(t, []string{"--config-file", path}, fakeEnv{})
	c := o.cfg
	if c.Name != "m1" || c.DataDir != "/var/lib/m1" {
		t.Errorf("name %q data-dir %q", c.Name, c.DataDir)
	}
	if got := urlList(c.ListenClientURLs); got != "http://127.0.0.1:26101,http://127.0.0.1:26102" {
		t.Errorf("listen-client-urls %s", got)
	}
	// etcd keeps the default advertised URL when the file omits it.
	if got := urlList(c.AdvertiseClientURLs); got != "http://127.0.0.1:2379" {
		t.Errorf("advertise-client-urls %s, want the default", got)
	}
	if c.HeartbeatInterval != 200*time.Millisecond || c.ElectionTimeout != 2*time.Second {
		t.Errorf("heartbeat %v election %v", c.HeartbeatInterval, c.ElectionTimeout)
	}
	if c.QuotaBackendBytes != 8<<30 {
		t.Errorf("quota %d", c.QuotaBackendBytes)
	}
	if c.GRPCKeepAliveInterval != time.Hour || c.GRPCKeepAliveTimeout != 30*time.Second {
		t.Errorf("keepalive interval %v (nanoseconds, as etcd reads them), timeout %v", c.GRPCKeepAliveInterval, c.GRPCKeepAliveTimeout)
	}
	if !slices.Equal(c.LogOutputs, []string{"stderr", "stdout"}) {
		t.Errorf("log-outputs %v", c.LogOutputs)
	}
	if got := urlList(c.ListenMetricsURLs); got != "http://127.0.0.1:26190" {
		t.Errorf("listen-metrics-urls %s", got)
	}
	if c.AuthToken != "jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256" || c.AuthTokenTTL != time.Minute || c.BcryptCost != 12 {
		t.Errorf("auth-token %q ttl %v bcrypt %d", c.AuthToken, c.AuthTokenTTL, c.BcryptCost)
	}
	if !slices.Equal(c.Peers, []string{"127.0.0.1:26280", "127.0.0.1:26380"}) || c.JoinTimeout != 15*time.Second || c.MeshPassword != "s3cret" {
		t.Errorf("meshetcd keys: peers %v join-timeout %v secret set %v", c.Peers, c.JoinTimeout, c.MeshPassword != "")
	}
	if !hasWarning(o, "unknown key", "key", "no-such-key") {
		t.Errorf("no warning for an unknown key: %v", o.warnings)
	}
}

// TestConfigFileReplacesFlagsAndEnv: etcd 3.7 ignores every other flag and
// ETCD_* variable when a config file is given (etcdmain config.parse), and
// reads ETCD_CONFIG_FILE when the flag is absent.
func TestConfigFileReplacesFlagsAndEnv(t *testing.T) {
	path := writeConfig(t, "name: fromfile\n")
	env := fakeEnv{"ETCD_NAME": "fromenv", "ETCD_MAX_TXN_OPS": "0"}
	o := mustParse(t, []string{"--config-file", path, "--name", "fromflag", "--snapshot-count", "3"}, env)
	if o.cfg.Name != "fromfile" || o.cfg.SnapshotCount != 10000 || o.cfg.MaxTxnOps != 128 {
		t.Errorf("name %q snapshot-count %d max-txn-ops %d: flags or env were applied", o.cfg.Name, o.cfg.SnapshotCount, o.cfg.MaxTxnOps)
	}
	for _, f := range []string{"--name", "--snapshot-count"} {
		if !hasWarning(o, "ignored", "flag", f) {
			t.Errorf("no warning that %s is ignored: %v", f, o.warnings)
		}
	}
	if !hasWarning(o, "ignored", "environment-variable", "ETCD_NAME") {
		t.Errorf("no warning that ETCD_NAME is ignored: %v", o.warnings)
	}

	o = mustParse(t, nil, fakeEnv{"ETCD_CONFIG_FILE": path, "ETCD_NAME": "fromenv"})
	if o.cfg.Name != "fromfile" {
		t.Errorf("ETCD_CONFIG_FILE: name %q", o.cfg.Name)
	}

	// The mesh secret has no key: MESHETCD_MESH_PASSWORD still applies,
	// never a silent plaintext mesh.
	o = mustParse(t, []string{"--config-file", path}, fakeEnv{meshPasswordEnv: "envsecret"})
	if o.cfg.MeshPassword != "envsecret" {
		t.Errorf("MESHETCD_MESH_PASSWORD ignored with a config file")
	}

	// Flags are still parsed: a bad one is an error, as in etcd.
	mustFail(t, []string{"--config-file", path, "--no-such-flag"}, fakeEnv{}, "no-such-flag")
}

func TestConfigFileSecurityBlocks(t *testing.T) {
	path := writeConfig(t, `
client-transport-security:
  cert-file: /etc/etcd/server.crt
  key-file: /etc/etcd/server.key
  client-cert-auth: true
  trusted-ca-file: /etc/etcd/ca.crt
  auto-tls: false
  allowed-hostname: [client.example]
peer-transport-security:
  cert-file: /etc/etcd/peer.crt
  key-file: /etc/etcd/peer.key
  client-cert-auth: true
  trusted-ca-file: /etc/etcd/ca.crt
  allowed-cn: [m1, m2]
  allowed-hostname: []
socket-options:
  reuse-port: true
`)
	args, _, err := configFileArgs(path, registeredFlags(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--cert-file=/etc/etcd/server.crt", "--key-file=/etc/etcd/server.key", "--client-cert-auth=true",
		"--trusted-ca-file=/etc/etcd/ca.crt", "--auto-tls=false", "--client-cert-allowed-hostname=client.example",
		"--peer-cert-file=/etc/etcd/peer.crt", "--peer-key-file=/etc/etcd/peer.key", "--peer-client-cert-auth=true",
		"--peer-trusted-ca-file=/etc/etcd/ca.crt", "--peer-cert-allowed-cn=m1,m2", "--peer-cert-allowed-hostname=",
		"--socket-reuse-port=true",
	}
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("missing %s in %v", w, args)
		}
	}

	for body, msg := range map[string]string{
		"client-transport-security: yes\n":                    "invalid client-transport-security",
		"client-transport-security:\n  allowed-cn: [x]\n":     "client-transport-security.allowed-cn is not supported",
		"discovery-config:\n  endpoints: [http://h:2379]\n":   "discovery-config is not supported",
		"grpc-keepalive-timeout: 1.5\n":                       "nanoseconds",
		"name: x\nname: [\n":                                  "",
		"initial-cluster-state: bogus\n":                      "initial-cluster-state",
		"strict-reconfig-check: maybe\n":                      "strict-reconfig-check",
		"heartbeat-interval: 100\nelection-timeout: 100\n":    "should be at least as 5 times",
		"listen-client-urls: http://example.com:2379\n":       "expected IP in URL for binding",
		"log-outputs: [{a: b}]\n":                             "log-outputs",
		"- just\n- a list\n":                                  "want a YAML mapping",
		"mesh-password-file: /nonexistent/mesh-secret-file\n": "mesh-password-file",
	} {
		p := writeConfig(t, body)
		if msg == "" {
			mustFail(t, []string{"--config-file", p}, fakeEnv{})
			continue
		}
		mustFail(t, []string{"--config-file", p}, fakeEnv{}, msg)
	}
	mustFail(t, []string{"--config-file", filepath.Join(t.TempDir(), "missing.yml")}, fakeEnv{}, "no such file")
}
