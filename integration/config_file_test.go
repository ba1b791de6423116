package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// TestConfigFileLikeEtcd starts each binary from the same kind of YAML
// file an etcd operator has (etcd's keys, the security blocks, a duration
// in nanoseconds, a list, plus meshetcd's own keys, which etcd ignores),
// with a conflicting flag and ETCD_* variable that both must ignore, and
// checks the file was applied: name, client and metrics listeners, the
// JWT auth token.
func TestConfigFileLikeEtcd(t *testing.T) {
	authToken := writeJWTKeys(t, "ES256")
	forEachClusterServer(t, func(t *testing.T, bin string) {
		dir := t.TempDir()
		secret := filepath.Join(dir, "mesh.secret")
		if err := os.WriteFile(secret, []byte("config-file-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
		peer := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
		metrics := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
		yaml := fmt.Sprintf(`# etcd.conf.yml as etcd documents it
name: 'cfgmember'
data-dir: %s
listen-client-urls: %s
advertise-client-urls: %s
listen-peer-urls: %s
initial-advertise-peer-urls: %s
initial-cluster: cfgmember=%s
initial-cluster-token: 'cfg-token'
initial-cluster-state: 'new'
snapshot-count: 5000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 4294967296
max-request-bytes: 2097152
auto-compaction-mode: revision
auto-compaction-retention: "1000"
listen-metrics-urls: %s
auth-token: %s
auth-token-ttl: 600
bcrypt-cost: 4
logger: zap
log-level: info
log-outputs: [stderr]
grpc-keepalive-min-time: 5000000000
enable-v2:
client-transport-security:
  client-cert-auth: false
  auto-tls: false
peer-transport-security:
  client-cert-auth: false
  auto-tls: false
# meshetcd's own keys (etcd ignores unknown keys)
join-timeout: 30s
mesh-password-file: %s
`, filepath.Join(dir, "cfg.data"), client, client, peer, peer, peer, metrics, authToken, secret)
		path := filepath.Join(dir, "etcd.conf.yml")
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		p := StartProc(t, ProcOptions{Bin: bin, NoDefaults: true,
			Args: []string{"--config-file", path, "--name", "flagname", "--snapshot-count", "7"},
			Env:  []string{"ETCD_NAME=envname", "ETCD_MAX_TXN_OPS=0"}})
		if p.ClientURL != client {
			t.Fatalf("serving on %s, want the file's %s", p.ClientURL, client)
		}
		if out := p.MustCtl(t, "member", "list"); !strings.Contains(out, "cfgmember") {
			t.Errorf("member list does not show the file's name:\n%s", out)
		}
		if !strings.Contains(p.Logs.String(), "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided") {
			t.Errorf("no config-file log line")
		}
		if bin == bins.meshetcd {
			encrypted := false
			for _, e := range p.Logs.entries() {
				if e.msg() == "mesh router started" {
					encrypted, _ = e["encrypted"].(bool)
				}
			}
			if !encrypted {
				t.Errorf("the mesh is not encrypted: the file's mesh-password-file was not applied")
			}
		}
		for path, want := range map[string]string{"/metrics": "etcd_mvcc_db_total_size_in_bytes", "/health": `"health":"true"`} {
			if code, body := httpGet(t, metrics+path); code != 200 || !strings.Contains(body, want) {
				t.Errorf("GET %s%s: %d, body lacks %q", metrics, path, code, want)
			}
		}
		cli := p.Client(t)
		enableRootAuth(t, cli)
		resp, err := cli.Authenticate(ctx(t), "root", "rootpw")
		if err != nil {
			t.Fatalf("authenticate: %v", err)
		}
		if strings.Count(resp.Token, ".") != 2 || len(resp.Token) < 100 {
			t.Errorf("token %q is not a JWT: the file's auth-token was not applied", resp.Token)
		}
	})
}

// TestConfigFileErrors: an unreadable or malformed file, a bad value, and
// etcd v3 discovery (not supported) are refused before anything starts.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing.yml"), "no such file or directory"},
		{write("syntax.yml", "name: [a\n"), "did not find expected"},
		{write("value.yml", "heartbeat-interval: 300\n"), "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"},
		{write("discovery.yml", "discovery-config:\n  endpoints: [http://127.0.0.1:2379]\n  token: t\n"), "discovery-config is not supported"},
	} {
		code, out := RunOnce(t, bins.meshetcd, nil, "--config-file", tc.path)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("--config-file %s: exit %d, want 2 and %q:\n%s", filepath.Base(tc.path), code, tc.want, out)
		}
	}
}
