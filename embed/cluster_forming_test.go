package embed

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshetcd/meshetcd/mesh"
)

// waitVoters polls the member list through cli until it has want voters.
func waitVoters(t *testing.T, cli *clientv3.Client, want int) {
	t.Helper()
	ctx := clusterCtx(t)
	var last string
	for ctx.Err() == nil {
		ml, err := cli.MemberList(ctx)
		if err == nil {
			voters := 0
			for _, m := range ml.Members {
				if !m.IsLearner && len(m.ClientURLs) > 0 {
					voters++
				}
			}
			if voters == want && len(ml.Members) == want {
				return
			}
			last = fmt.Sprint(ml.Members)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("never saw %d voters; last: %s", want, last)
}

func TestStartClusterDiscoveryAndLateMemberJoins(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{Discovery: true})
	checkOneCluster(t, c, 3)

	// A fourth member started with the same --discovery-size finds the
	// running cluster by gossip and joins it (learner, then voter).
	cfg, err := c.NewMemberConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DiscoverySize = 3
	cfg.Peers = []string{c.Members()[2].PeerAddr()}
	if _, err := c.StartMember(clusterCtx(t), cfg); err != nil {
		t.Fatalf("late discovery member: %v", err)
	}
	waitVoters(t, c.Client(), 4)
	checkOneCluster(t, c, 4)
}

func TestJoinPromotesToVoter(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{})
	m, err := c.Join(clusterCtx(t))
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	waitVoters(t, c.Client(), 4)
	checkOneCluster(t, c, 4)
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := clusterCtx(t)
	if _, err := c.Client().Put(ctx, "j", "1"); err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "j"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("linearizable get on the joined member: %v %v", err, r)
	}
}

// TestMemberAddThenExisting is etcd's flow: `etcdctl member add`, then
// start the new member with --initial-cluster-state existing and the full
// --initial-cluster.
func TestMemberAddThenExisting(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{})
	ctx := clusterCtx(t)
	cfg, err := c.NewMemberConfig()
	if err != nil {
		t.Fatal(err)
	}
	// Like etcd, the strict reconfig check refuses to add a voter until
	// the leader has been connected to its peers for a while (5 s).
	var add *clientv3.MemberAddResponse
	for {
		add, err = c.Client().MemberAdd(ctx, []string{cfg.AdvertisePeerURLs[0].String()})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || ctx.Err() != nil {
			t.Fatalf("member add: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ic []string
	for _, m := range add.Members {
		name := m.Name
		if m.ID == add.Member.ID {
			name = cfg.Name
		}
		ic = append(ic, name+"="+m.PeerURLs[0])
	}
	cfg.InitialCluster = strings.Join(ic, ",")
	cfg.InitialClusterState = ClusterStateExisting
	m, err := c.StartMember(ctx, cfg)
	if err != nil {
		t.Fatalf("start existing: %v", err)
	}
	if uint64(m.Server().MemberID()) != add.Member.ID {
		t.Fatalf("member id %s, member add said %x", m.Server().MemberID(), add.Member.ID)
	}
	waitVoters(t, c.Client(), 4)
	checkOneCluster(t, c, 4)
}

// TestMeshRefusesWrongSecretAndToken: a member with another mesh secret or
// cluster token cannot join, the mesh logs why, and the cluster keeps
// serving.
func TestMeshRefusesWrongSecretAndToken(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{MeshPassword: "right secret"})
	for _, tc := range []struct {
		name, password, token string
		wantErr               error
	}{
		{"wrong secret", "wrong secret", DefaultInitialClusterToken, mesh.ErrAuth},
		{"wrong token", "right secret", "other-cluster", mesh.ErrWrongCluster},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := c.NewMemberConfig()
			if err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.InfoLevel)
			cfg.Logger = zap.New(core)
			cfg.MeshPassword, cfg.InitialClusterToken = tc.password, tc.token
			cfg.Join = true
			cfg.Peers = []string{c.Members()[0].PeerAddr()}
			// Start the member in the background; once the cluster's router
			// has recorded the refused handshake, give up on it. (No fixed
			// deadline: the Argon2 key derivation alone can take seconds on
			// a loaded machine with the race detector.)
			ctx, cancel := context.WithCancel(clusterCtx(t))
			defer cancel()
			type res struct {
				m   *Member
				err error
			}
			done := make(chan res, 1)
			go func() {
				m, err := StartMember(ctx, cfg)
				done <- res{m, err}
			}()
			refusedByCluster := func() bool {
				for _, f := range c.Members()[0].MeshStatus().HandshakeFailures {
					if strings.Contains(f.Error, tc.wantErr.Error()) {
						return true
					}
				}
				return false
			}
			for !refusedByCluster() {
				select {
				case r := <-done:
					if r.m != nil {
						_ = r.m.Close()
					}
					t.Fatalf("member start ended (%v) before the cluster recorded a refused handshake", r.err)
				case <-ctx.Done():
					t.Fatal("the cluster never recorded a refused handshake")
				case <-time.After(50 * time.Millisecond):
				}
			}
			// Let the member try a little longer: it must still not get in.
			time.Sleep(500 * time.Millisecond)
			cancel()
			if r := <-done; r.err == nil {
				_ = r.m.Close()
				t.Fatal("a member with the wrong mesh credentials joined")
			}
			// The refused member logs the mesh's reason.
			logged := false
			for _, e := range logs.FilterMessageSnippet("mesh handshake refused").All() {
				if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, tc.wantErr.Error()) {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no 'mesh handshake refused' log line with %v", tc.wantErr)
			}
			if _, err := c.Client().Put(clusterCtx(t), "still", "ok"); err != nil {
				t.Fatalf("cluster after the refused member: %v", err)
			}
		})
	}
	checkOneCluster(t, c, 3)
}

func TestClusterConfigErrors(t *testing.T) {
	cfg, _ := testConfig(t)
	p := freePeerURL(t)
	cfg.ListenPeerURLs, cfg.AdvertisePeerURLs = []url.URL{p}, []url.URL{p}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"discovery and join", func(c *Config) { c.DiscoverySize, c.Join = 3, true }, "exclude each other"},
		{"join without peers", func(c *Config) { c.Join = true }, "--join needs --peers"},
		{"discovery with initial cluster", func(c *Config) { c.DiscoverySize, c.InitialCluster = 3, "t1="+p.String() }, "cannot be combined"},
		{"bad peers", func(c *Config) { c.Peers = []string{"nohostport"} }, "--peers"},
		{"two listen peer urls", func(c *Config) { c.ListenPeerURLs = append(c.ListenPeerURLs, p) }, "exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mod(&c)
			_, err := StartMember(startCtx(t), c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRestartIgnoresBootstrapFlags: a member restarted on its data
// directory with its original (discovery) flags recovers from its WAL
// instead of discovering again.
func TestRestartIgnoresBootstrapFlags(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{Discovery: true})
	ctx := clusterCtx(t)
	m0 := c.Members()[0]
	cid := m0.Server().ClusterID()
	if _, err := c.Client().Put(ctx, "before", "restart"); err != nil {
		t.Fatal(err)
	}
	if err := m0.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := m0.Config()
	if cfg.DiscoverySize != 3 {
		t.Fatalf("config lost its discovery size: %+v", cfg)
	}
	m, err := c.StartMember(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if m.Server().ClusterID() != cid || m.Server().MemberID() != m0.Server().MemberID() {
		t.Fatalf("restarted as %s in %s, was %s in %s", m.Server().MemberID(), m.Server().ClusterID(), m0.Server().MemberID(), cid)
	}
	cli, err := m.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if r, err := cli.Get(ctx, "before"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("get after restart: %v %v", err, r)
	}
}

func TestStartClusterLoopback(t *testing.T) {
	c := startTestClusterOn(t, 3, ClusterOptions{MeshPassword: "secret", Token: "loop"})
	checkOneCluster(t, c, 3)
	st := c.Members()[0].MeshStatus()
	if !st.Encrypted || st.ClusterLabel != "loop" || !strings.HasPrefix(string(st.Name), "127.0.0.1:") {
		t.Fatalf("mesh status %+v", st)
	}
	if _, err := c.Client().Put(clusterCtx(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
}

// A joining member that gets no answer gives up after JoinTimeout and
// names the reason of its last attempt.
func TestRefusedJoinerGivesUpWithReason(t *testing.T) {
	c := startTestCluster(t, 1, ClusterOptions{MeshPassword: "right secret"})
	seed := c.Members()[0].PeerAddr()
	for _, tc := range []struct {
		name, password, token string
		peers                 []string
		want                  string
	}{
		{"wrong secret", "wrong secret", DefaultInitialClusterToken, []string{seed}, "mesh secret mismatch with " + seed},
		{"wrong token", "right secret", "other-cluster", []string{seed}, "cluster label mismatch with " + seed},
		{"nobody reachable", "right secret", DefaultInitialClusterToken, []string{"10.9.9.9:2380"}, "no member reachable over the mesh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := c.NewMemberConfig()
			if err != nil {
				t.Fatal(err)
			}
			cfg.MeshPassword, cfg.InitialClusterToken = tc.password, tc.token
			cfg.Join = true
			cfg.Peers = tc.peers
			cfg.JoinTimeout = 3 * time.Second
			start := time.Now()
			m, err := StartMember(clusterCtx(t), cfg)
			if err == nil {
				_ = m.Close()
				t.Fatal("a member that cannot join started")
			}
			if !errors.Is(err, ErrJoinTimeout) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrJoinTimeout naming %q", err, tc.want)
			}
			t.Logf("StartMember: %v", err)
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("gave up only after %v with a 3 s join timeout", d)
			}
		})
	}
	if _, err := c.Client().Put(clusterCtx(t), "still", "ok"); err != nil {
		t.Fatalf("cluster after the refused joiners: %v", err)
	}
}
