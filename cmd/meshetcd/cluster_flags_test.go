package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/embed"
)

func TestStaticClusterFlags(t *testing.T) {
	o := mustParse(t, []string{"--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:26380",
		"--listen-peer-urls", "http://127.0.0.1:26380",
		"--initial-cluster", "a=http://127.0.0.1:26380,b=http://127.0.0.1:26381,c=http://127.0.0.1:26382",
		"--initial-cluster-state", "new", "--initial-cluster-token", "tok", "--strict-reconfig-check=false"}, fakeEnv{})
	ic, err := o.cfg.InitialClusterMap()
	if err != nil || len(ic) != 3 {
		t.Fatalf("initial cluster %v %v", ic, err)
	}
	if o.cfg.StrictReconfigCheck || o.cfg.InitialClusterToken != "tok" {
		t.Errorf("cfg = %+v", o.cfg)
	}
	if !mustParse(t, nil, fakeEnv{}).cfg.StrictReconfigCheck {
		t.Error("--strict-reconfig-check defaults to false, etcd's default is true")
	}
}

func TestDiscoveryAndJoinFlags(t *testing.T) {
	base := []string{"--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:26380", "--listen-peer-urls", "http://127.0.0.1:26380"}
	o := mustParse(t, append(base, "--discovery-size", "3", "--peers", "127.0.0.1:26381, 127.0.0.1:26382"), fakeEnv{})
	if o.cfg.DiscoverySize != 3 || strings.Join(o.cfg.Peers, ",") != "127.0.0.1:26381,127.0.0.1:26382" {
		t.Errorf("discovery cfg: size %d peers %v", o.cfg.DiscoverySize, o.cfg.Peers)
	}
	// meshetcd's own flags come from MESHETCD_*, not ETCD_*.
	o = mustParse(t, base, fakeEnv{"MESHETCD_DISCOVERY_SIZE": "5", "MESHETCD_PEERS": "127.0.0.1:26381", "ETCD_JOIN": "true"})
	if o.cfg.DiscoverySize != 5 || len(o.cfg.Peers) != 1 || o.cfg.Join {
		t.Errorf("env: size %d peers %v join %v", o.cfg.DiscoverySize, o.cfg.Peers, o.cfg.Join)
	}
	if !hasWarning(o, "unrecognized environment variable", "environment-variable", "ETCD_JOIN=true") {
		t.Errorf("ETCD_JOIN not warned about: %+v", o.warnings)
	}
	o = mustParse(t, append(base, "--join", "--peers", "127.0.0.1:26381"), fakeEnv{})
	if !o.cfg.Join {
		t.Error("--join not set")
	}
	mustFail(t, append(base, "--join"), fakeEnv{}, "--join needs --peers")
	mustFail(t, append(base, "--join", "--discovery-size", "3", "--peers", "127.0.0.1:26381"), fakeEnv{}, "exclude each other")
	mustFail(t, append(base, "--discovery-size", "3", "--peers", "nohostport"), fakeEnv{}, "--peers")
	mustFail(t, []string{"--discovery-size", "3", "--initial-advertise-peer-urls", "http://127.0.0.1:0"}, fakeEnv{}, "port must be fixed")
}

func TestMeshSecretFlags(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := mustParse(t, []string{"--mesh-password-file", f}, fakeEnv{})
	if o.cfg.MeshPassword != "s3cret" {
		t.Errorf("password from file = %q", o.cfg.MeshPassword)
	}
	o = mustParse(t, nil, fakeEnv{"MESHETCD_MESH_PASSWORD": "envsecret"})
	if o.cfg.MeshPassword != "envsecret" {
		t.Errorf("password from env = %q", o.cfg.MeshPassword)
	}
	for _, w := range o.warnings {
		for _, v := range w.fields {
			if strings.Contains(v, "envsecret") {
				t.Errorf("the mesh secret is logged: %+v", w)
			}
		}
	}
	o = mustParse(t, []string{"--mesh-password-file", f}, fakeEnv{"MESHETCD_MESH_PASSWORD": "envsecret"})
	if o.cfg.MeshPassword != "s3cret" || !hasWarning(o, "shadowed", "environment-variable", "MESHETCD_MESH_PASSWORD") {
		t.Errorf("file must win over env with a warning: %q %+v", o.cfg.MeshPassword, o.warnings)
	}
	mustFail(t, []string{"--mesh-password-file", filepath.Join(t.TempDir(), "missing")}, fakeEnv{}, "--mesh-password-file")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustFail(t, []string{"--mesh-password-file", empty}, fakeEnv{}, "empty")
	// There is no flag carrying the secret itself.
	mustFail(t, []string{"--mesh-password", "x"}, fakeEnv{}, "mesh-password")

	// --peer-auto-tls is honoured (ephemeral mesh encryption), from the
	// flag or etcd's variable.
	if o := mustParse(t, []string{"--peer-auto-tls"}, fakeEnv{}); !o.cfg.PeerAutoTLS {
		t.Error("--peer-auto-tls not set in the config")
	}
	if o := mustParse(t, nil, fakeEnv{"ETCD_PEER_AUTO_TLS": "true"}); !o.cfg.PeerAutoTLS {
		t.Error("ETCD_PEER_AUTO_TLS not honoured")
	}
	if o := mustParse(t, []string{"--peer-auto-tls"}, fakeEnv{"MESHETCD_MESH_PASSWORD": "s"}); !o.cfg.PeerAutoTLS || o.cfg.MeshPassword != "s" {
		t.Error("--peer-auto-tls with a mesh secret: both must reach the config (the secret wins in embed)")
	}
}

// etcd's peer TLS flags (and their ETCD_* variables) reach
// embed.Config.PeerTLSInfo; lists split like etcdmain's.
func TestPeerTLSFlags(t *testing.T) {
	o := mustParse(t, []string{"--peer-cert-file", "/p.crt", "--peer-key-file", "/p.key", "--peer-trusted-ca-file", "/ca.crt",
		"--peer-client-cert-auth", "--peer-crl-file", "/p.crl", "--peer-cert-allowed-cn", "m1,m2",
		"--peer-client-cert-file", "/c.crt", "--peer-client-key-file", "/c.key", "--peer-skip-client-san-verification"}, fakeEnv{})
	i := o.cfg.PeerTLSInfo
	if i.CertFile != "/p.crt" || i.KeyFile != "/p.key" || i.TrustedCAFile != "/ca.crt" || !i.ClientCertAuth || i.CRLFile != "/p.crl" || !i.SkipClientSANVerify ||
		i.ClientCertFile != "/c.crt" || i.ClientKeyFile != "/c.key" || !slices.Equal(i.AllowedCNs, []string{"m1", "m2"}) || i.AllowedHostnames != nil {
		t.Errorf("peer TLS flags not in the config: %+v", i)
	}
	o = mustParse(t, nil, fakeEnv{"ETCD_PEER_CERT_FILE": "/e.crt", "ETCD_PEER_CERT_ALLOWED_HOSTNAME": "a.example"})
	if i := o.cfg.PeerTLSInfo; i.CertFile != "/e.crt" || !slices.Equal(i.AllowedHostnames, []string{"a.example"}) || i.AllowedCNs != nil {
		t.Errorf("peer TLS variables not in the config: %+v", i)
	}
	mustFail(t, []string{"--discovery-srv", "example.com"}, fakeEnv{}, "--discovery-size")
}

func TestHelpMentionsClusterFlags(t *testing.T) {
	o := mustParse(t, []string{"--help"}, fakeEnv{})
	for _, s := range []string{"--discovery-size", "--peers", "--join", "--mesh-password-file", "MESHETCD_MESH_PASSWORD", "--strict-reconfig-check", "--peer-auto-tls"} {
		if !strings.Contains(o.help, s) {
			t.Errorf("--help does not mention %s", s)
		}
	}
}

// freeTestPort is a free loopback port in 32000-32999.
func freeTestPort(t *testing.T, skip string) string {
	t.Helper()
	for p := 32000 + time.Now().Nanosecond()%900; p < 33000; p++ {
		port := strconv.Itoa(p)
		if port == skip {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatal("no free port in 32000-32999")
	return ""
}

// A joiner that nobody answers exits 1 after --join-timeout, naming why.
func TestJoinTimeoutExitsOne(t *testing.T) {
	if o := mustParse(t, []string{"--join-timeout", "5s"}, fakeEnv{}); o.cfg.JoinTimeout != 5*time.Second {
		t.Errorf("--join-timeout 5s: %v", o.cfg.JoinTimeout)
	}
	if o := mustParse(t, nil, fakeEnv{"MESHETCD_JOIN_TIMEOUT": "7s"}); o.cfg.JoinTimeout != 7*time.Second {
		t.Errorf("MESHETCD_JOIN_TIMEOUT=7s: %v", o.cfg.JoinTimeout)
	}
	if o := mustParse(t, nil, fakeEnv{}); o.cfg.JoinTimeout != embed.DefaultJoinTimeout {
		t.Errorf("default join timeout: %v", o.cfg.JoinTimeout)
	}
	mustFail(t, []string{"--join-timeout", "-1s"}, fakeEnv{}, "--join-timeout")

	peer := freeTestPort(t, "")
	nobody := freeTestPort(t, peer)
	var out, errb bytes.Buffer
	logFile := filepath.Join(t.TempDir(), "log")
	start := time.Now()
	codec := make(chan int, 1)
	go func() {
		codec <- run([]string{"meshetcd", "--name", "j", "--data-dir", filepath.Join(t.TempDir(), "d"), "--log-outputs", logFile,
			"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", "http://127.0.0.1:" + peer, "--initial-advertise-peer-urls", "http://127.0.0.1:" + peer,
			"--join", "--peers", "127.0.0.1:" + nobody, "--join-timeout", "2s"}, &out, &errb, fakeEnv{})
	}()
	var code int
	select {
	case code = <-codec:
	case <-time.After(60 * time.Second):
		t.Fatal("meshetcd still running 60 s after a 2 s --join-timeout")
	}
	if code != exitError {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitError, errb.String())
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(logs); !strings.Contains(s, "could not join the cluster") || !strings.Contains(s, "no member reachable") {
		t.Fatalf("the log does not name the reason:\n%s", s)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("exited only after %v", d)
	}
}
