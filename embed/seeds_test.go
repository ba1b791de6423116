package embed

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// fakeResolver is an injected DNS: name -> addresses, changeable.
type fakeResolver struct {
	mu    sync.Mutex
	hosts map[string][]string
}

func (f *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.hosts[host]; ok {
		return slices.Clone(a), nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestSeedExpanderResolvesEveryAddress(t *testing.T) {
	r := &fakeResolver{hosts: map[string][]string{"members.example": {"10.0.0.2", "10.0.0.1", "fd00::1"}}}
	e := newSeedExpander(zap.NewNop(), r, []string{"members.example:2380", "10.0.0.9:2380", "later.example:2380"})
	if !e.named() {
		t.Fatal("named() = false with host names in --peers")
	}
	got := e.seeds(context.Background())
	want := []string{"10.0.0.1:2380", "10.0.0.2:2380", "10.0.0.9:2380", "[fd00::1]:2380", "later.example:2380"}
	if !slices.Equal(got, want) {
		t.Errorf("seeds = %q, want %q (a name that does not resolve stays as given)", got, want)
	}
	if newSeedExpander(zap.NewNop(), r, []string{"10.0.0.9:2380"}).named() {
		t.Error("named() = true for IP literals only")
	}
}

// TestSeedExpanderRefreshAddsNewAddresses: addresses a name gains later
// (pods starting behind a headless Service) are handed to the mesh once.
func TestSeedExpanderRefreshAddsNewAddresses(t *testing.T) {
	r := &fakeResolver{hosts: map[string][]string{"members.example": {"10.0.0.1"}}}
	e := newSeedExpander(zap.NewNop(), r, []string{"members.example:2380"})
	e.interval = 5 * time.Millisecond
	known := e.seeds(context.Background())
	added := make(chan []string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.refresh(ctx, known, func(s ...string) { added <- s })
	}()
	defer func() { cancel(); <-done }()
	r.mu.Lock()
	r.hosts["members.example"] = []string{"10.0.0.1", "10.0.0.2"}
	r.mu.Unlock()
	select {
	case got := <-added:
		if !slices.Equal(got, []string{"10.0.0.2:2380"}) {
			t.Errorf("added %q, want only the new address", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new address was never added")
	}
	time.Sleep(50 * time.Millisecond)
	if len(added) != 0 {
		t.Errorf("an address was added twice: %q", <-added)
	}
}

// TestPeersHostNameFormsCluster: three members on 127.0.0.2-4 with the
// same peer port, each given only --peers members.test:<port>, which the
// injected resolver maps to all three addresses (what a Kubernetes headless
// Service does), form one cluster by discovery.
func TestPeersHostNameFormsCluster(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	free := freePeerURL(t)
	port := free.Port()
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			t.Skipf("loopback address %s:%s unusable here: %v", ip, port, err)
		}
		l.Close()
	}
	r := &fakeResolver{hosts: map[string][]string{"members.test": ips}}
	lg := zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	var wg sync.WaitGroup
	members := make([]*Member, len(ips))
	errs := make([]error, len(ips))
	for i, ip := range ips {
		cfg := NewConfig()
		cfg.Name = fmt.Sprintf("dns%d", i)
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
		peer := url.URL{Scheme: "http", Host: net.JoinHostPort(ip, port)}
		client := url.URL{Scheme: "http", Host: net.JoinHostPort(ip, "0")}
		cfg.ListenPeerURLs, cfg.AdvertisePeerURLs = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{client}, []url.URL{client}
		cfg.DiscoverySize = len(ips)
		cfg.Peers = []string{"members.test:" + port}
		cfg.SeedResolver = r
		cfg.DiscoveryTimeout = 30 * time.Second
		cfg.Logger = lg.Named(cfg.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			members[i], errs[i] = StartMember(startCtx(t), cfg)
		}()
	}
	wg.Wait()
	for i, m := range members {
		if errs[i] != nil {
			t.Fatalf("member %d: %v", i, errs[i])
		}
		t.Cleanup(func() { _ = m.Close() })
	}
	for _, m := range members[1:] {
		if m.Server().ClusterID() != members[0].Server().ClusterID() {
			t.Fatalf("members formed different clusters")
		}
	}
	cli, err := members[2].Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ml, err := cli.MemberList(startCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != len(ips) {
		t.Errorf("member list has %d members, want %d", len(ml.Members), len(ips))
	}
}
