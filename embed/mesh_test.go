package embed

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshetcd/meshetcd/kvstore"
)

func TestRouterConfigFromMemberConfig(t *testing.T) {
	cfg := NewConfig()
	cfg.Name = "b"
	cfg.InitialClusterToken = "tok"
	cfg.ListenPeerURLs = []url.URL{{Scheme: "http", Host: "0.0.0.0:2381"}}
	cfg.AdvertisePeerURLs = []url.URL{{Scheme: "http", Host: "10.0.0.2:2381"}, {Scheme: "http", Host: "10.0.0.1:2381"}}
	cfg.Peers = []string{"10.0.0.9:2380", "10.0.0.3:2380"}
	ic := map[string][]string{
		"a": {"http://10.0.0.1:2380"},
		"b": {"http://10.0.0.2:2381", "http://10.0.0.1:2381"},
		"c": {"http://10.0.0.3:2380"},
	}
	mc, err := routerConfig(&cfg, zap.NewNop(), ic, meshDatagramSize(kvstore.Config{MaxRequestBytes: cfg.MaxRequestBytes}))
	if err != nil {
		t.Fatal(err)
	}
	// The peer name is host:port of the first sorted advertised peer URL.
	if mc.Name != "10.0.0.1:2381" || mc.NickName != "b" || mc.ClusterLabel != "tok" || mc.ListenAddr != "0.0.0.0:2381" {
		t.Errorf("name %q nick %q label %q listen %q", mc.Name, mc.NickName, mc.ClusterLabel, mc.ListenAddr)
	}
	if !slices.Equal(mc.AdvertiseAddrs, []string{"10.0.0.2:2381", "10.0.0.1:2381"}) {
		t.Errorf("advertise %v", mc.AdvertiseAddrs)
	}
	// Seeds: the other members' peer URLs and --peers, not ourselves.
	if !slices.Equal(mc.Seeds, []string{"10.0.0.1:2380", "10.0.0.3:2380", "10.0.0.9:2380"}) {
		t.Errorf("seeds %v", mc.Seeds)
	}
	if !mc.InsecurePlaintext || mc.Password != "" {
		t.Error("no secret must mean explicit plaintext")
	}
	// --max-request-bytes < raft MaxSizePerMsg < mesh datagram limit.
	if mc.MaxDatagramSize <= int(cfg.MaxRequestBytes)+512<<10 {
		t.Errorf("datagram limit %d too small for %d-byte requests", mc.MaxDatagramSize, cfg.MaxRequestBytes)
	}
	if mc.DeadTimeout != 600*time.Millisecond {
		t.Errorf("default election timeout should keep the mesh's 600 ms dead timeout, got %v", mc.DeadTimeout)
	}

	cfg.MeshPassword = "s"
	cfg.ElectionTimeout = 5 * time.Second
	mc, err = routerConfig(&cfg, zap.NewNop(), ic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if mc.InsecurePlaintext || mc.Password != "s" {
		t.Error("secret not passed to the mesh")
	}
	if mc.DeadTimeout != 3*time.Second || mc.HeartbeatInterval != 750*time.Millisecond {
		t.Errorf("5 s election timeout: dead %v heartbeat %v", mc.DeadTimeout, mc.HeartbeatInterval)
	}
	cfg.ElectionTimeout = 200 * time.Millisecond
	if mc, _ = routerConfig(&cfg, zap.NewNop(), ic, 0); mc.DeadTimeout != minMeshDeadTimeout {
		t.Errorf("short election timeout: dead %v", mc.DeadTimeout)
	}

	// --peer-auto-tls: ephemeral encryption without a secret; a secret
	// takes precedence, and the log says so.
	cfg.PeerAutoTLS = true
	core, logs := observer.New(zap.InfoLevel)
	if mc, _ = routerConfig(&cfg, zap.New(core), ic, 0); mc.Password != "s" || mc.EphemeralEncryption || mc.InsecurePlaintext {
		t.Errorf("auto TLS with a secret: password %q ephemeral %v plaintext %v", mc.Password, mc.EphemeralEncryption, mc.InsecurePlaintext)
	}
	if logs.FilterMessageSnippet("secret takes precedence").Len() != 1 {
		t.Error("auto TLS overridden by the secret without a log line")
	}
	cfg.MeshPassword = ""
	if mc, _ = routerConfig(&cfg, zap.NewNop(), ic, 0); mc.Password != "" || !mc.EphemeralEncryption || mc.InsecurePlaintext {
		t.Errorf("auto TLS: password %q ephemeral %v plaintext %v", mc.Password, mc.EphemeralEncryption, mc.InsecurePlaintext)
	}
}
