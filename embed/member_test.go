package embed

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testConfig is a one-member config on free ports in a temp dir, logging
// into an observer so tests can look for log lines.
func testConfig(t *testing.T) (Config, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg := NewConfig()
	cfg.Name = "t1"
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	zero := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientURLs = []url.URL{zero}
	cfg.AdvertiseClientURLs = []url.URL{zero}
	cfg.ListenPeerURLs = []url.URL{zero}
	cfg.AdvertisePeerURLs = []url.URL{zero}
	cfg.Logger = zap.New(core)
	return cfg, logs
}

// freePeerURL is an http://127.0.0.1:port URL with a port that was free a
// moment ago (peer URLs of multi-member clusters need a fixed port).
func freePeerURL(t *testing.T) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

func startCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartMemberServesAndCloses(t *testing.T) {
	cfg, logs := testConfig(t)
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatalf("StartMember: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })

	if n := logs.FilterMessage("ready to serve client requests").Len(); n != 1 {
		t.Errorf("ready line logged %d times, want once", n)
	}
	urls := m.ClientURLs()
	if len(urls) != 1 || urls[0].Port() == "0" || urls[0].Port() == "" {
		t.Fatalf("ClientURLs = %v, want the bound port", urls)
	}

	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := startCtx(t)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	r, err := cli.Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", err, r)
	}
	// The advertised URL is what member list publishes.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 1 || ml.Members[0].Name != "t1" || len(ml.Members[0].ClientURLs) != 1 || ml.Members[0].ClientURLs[0] != urls[0].String() {
		t.Errorf("member list = %v, want t1 at %s", ml.Members, urls[0].String())
	}
	// HTTP shares the port.
	resp, err := http.Get(urls[0].String() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health status %d", resp.StatusCode)
	}
	if m.Server() == nil {
		t.Errorf("Server() is nil")
	}

	// Close is graceful, idempotent and concurrent-safe; the port is freed.
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case err := <-m.Err():
		t.Errorf("Close reported a fatal error: %v", err)
	default:
	}
	l, err := net.Listen("tcp", urls[0].Host)
	if err != nil {
		t.Errorf("client port still held after Close: %v", err)
	} else {
		l.Close()
	}
}

func TestRestartKeepsData(t *testing.T) {
	cfg, _ := testConfig(t)
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cli.Put(startCtx(t), "persist", "me")
	cli.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer m2.Close()
	cli2, err := m2.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	r, err := cli2.Get(startCtx(t), "persist")
	if err != nil || len(r.Kvs) != 1 || r.Kvs[0].ModRevision != pr.Header.Revision {
		t.Fatalf("after restart: %v %v", err, r)
	}
}

func TestSecondMemberOnSameDataDirFailsFast(t *testing.T) {
	cfg, _ := testConfig(t)
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	start := time.Now()
	m2, err := StartMember(startCtx(t), cfg) // same data dir, other free port
	if err == nil {
		m2.Close()
		t.Fatal("a second member started on a data dir in use")
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("second start took %v to fail", took)
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error does not say the data dir is in use: %v", err)
	}
	// The first member is unharmed.
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(startCtx(t), "still", "ok"); err != nil {
		t.Errorf("first member after the failed second start: %v", err)
	}
}

func TestStartMemberErrors(t *testing.T) {
	t.Run("https without a certificate", func(t *testing.T) {
		cfg, _ := testConfig(t)
		u := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
		cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{u}, []url.URL{u}
		_, err := StartMember(startCtx(t), cfg)
		if err == nil || !strings.Contains(err.Error(), "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cfg, _ := testConfig(t)
		u := url.URL{Scheme: "http", Host: l.Addr().String()}
		cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{u}, []url.URL{u}
		_, err = StartMember(startCtx(t), cfg)
		if err == nil || !strings.Contains(err.Error(), "cannot listen for client traffic") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("existing needs a fixed peer port", func(t *testing.T) {
		cfg, _ := testConfig(t)
		cfg.InitialClusterState = ClusterStateExisting
		_, err := StartMember(startCtx(t), cfg)
		if err == nil || !strings.Contains(err.Error(), "port must be fixed") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("existing with nobody to ask", func(t *testing.T) {
		cfg, _ := testConfig(t)
		p := freePeerURL(t)
		cfg.ListenPeerURLs, cfg.AdvertisePeerURLs = []url.URL{p}, []url.URL{p}
		cfg.InitialClusterState = ClusterStateExisting
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := StartMember(ctx, cfg); err == nil {
			t.Error("an existing-cluster start with no reachable member succeeded")
		}
	})
	t.Run("cancelled start", func(t *testing.T) {
		cfg, _ := testConfig(t)
		// An election timeout long enough that the member cannot be ready
		// before the context ends.
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 5*time.Second, 40*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := StartMember(ctx, cfg)
		if err == nil {
			t.Fatal("StartMember succeeded despite the cancelled context")
		}
		// Everything was released: the data dir can be used again.
		cfg.HeartbeatInterval, cfg.ElectionTimeout = DefaultHeartbeatInterval, DefaultElectionTimeout
		m, err := StartMember(startCtx(t), cfg)
		if err != nil {
			t.Fatalf("start after a cancelled start: %v", err)
		}
		m.Close()
	})
}

func TestMultipleListeners(t *testing.T) {
	cfg, logs := testConfig(t)
	zero := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientURLs = []url.URL{zero, zero}
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n := logs.FilterMessage("ready to serve client requests").Len(); n != 2 {
		t.Errorf("ready line logged %d times for 2 listeners", n)
	}
	for _, u := range m.ListenClientURLs() {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{u.String()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(startCtx(t), "via", u.Host); err != nil {
			t.Errorf("put via %s: %v", u.Host, err)
		}
		cli.Close()
	}
}

func TestValidate(t *testing.T) {
	good := NewConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no name":          {func(c *Config) { c.Name = "" }, "--name"},
		"no adv client":    {func(c *Config) { c.AdvertiseClientURLs = nil }, "--advertise-client-urls is required"},
		"hostname bind":    {func(c *Config) { c.ListenClientURLs = []url.URL{{Scheme: "http", Host: "example.com:1"}} }, "expected IP"},
		"unix":             {func(c *Config) { c.ListenClientURLs = []url.URL{{Scheme: "unix", Host: "x:1"}} }, "unix sockets"},
		"ftp peer":         {func(c *Config) { c.AdvertisePeerURLs = []url.URL{{Scheme: "ftp", Host: "127.0.0.1:2380"}} }, "peer"},
		"state":            {func(c *Config) { c.InitialClusterState = "maybe" }, `unexpected clusterState "maybe"`},
		"election":         {func(c *Config) { c.ElectionTimeout = 300 * time.Millisecond }, "at least as 5 times"},
		"election too big": {func(c *Config) { c.ElectionTimeout = time.Minute }, "too long"},
		"compaction":       {func(c *Config) { c.AutoCompactionMode = "hourly" }, "unknown auto-compaction-mode"},
		"retention":        {func(c *Config) { c.AutoCompactionRetention = "soon" }, "auto-compaction-retention"},
		"log level":        {func(c *Config) { c.LogLevel = "chatty" }, "log-level"},
		"cluster mismatch": {func(c *Config) { c.InitialCluster = "default=http://127.0.0.1:9999" }, "--initial-cluster has"},
		"bad cluster":      {func(c *Config) { c.InitialCluster = "default=notaurl" }, "--initial-cluster"},
	} {
		c := NewConfig()
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
	// Accepted forms of retention, like etcd.
	for _, tc := range []struct{ mode, ret string }{{"periodic", "1"}, {"periodic", "30m"}, {"revision", "1000"}, {"periodic", "0"}} {
		c := NewConfig()
		c.AutoCompactionMode, c.AutoCompactionRetention = tc.mode, tc.ret
		if err := c.Validate(); err != nil {
			t.Errorf("%s %s: %v", tc.mode, tc.ret, err)
		}
	}
}

// TestErrReportsUnexpectedStop: if the state machine stops on its own (not
// through Close), Err delivers a fatal error so the owner can exit.
func TestErrReportsUnexpectedStop(t *testing.T) {
	cfg, _ := testConfig(t)
	m, err := StartMember(startCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Server().Stop()
	select {
	case err := <-m.Err():
		if !strings.Contains(err.Error(), "stopped unexpectedly") {
			t.Errorf("Err = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no error after the state machine stopped")
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after a failure: %v", err)
	}
}
