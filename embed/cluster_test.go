package embed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/meshetcd/meshetcd/embed/embedtest"
	"github.com/meshetcd/meshetcd/mesh"
)

func clusterCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startTestCluster(t *testing.T, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Network == nil {
		opts.Network = embedtest.NewNetwork()
	}
	return startTestClusterOn(t, n, opts)
}

// startTestClusterOn starts n members as opts say (nil Network: loopback
// TCP).
func startTestClusterOn(t *testing.T, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	}
	c, err := StartCluster(clusterCtx(t), n, opts)
	if err != nil {
		t.Fatalf("StartCluster(%d): %v", n, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// checkOneCluster asserts that every member reports the same cluster id and
// a member list of want voters with client URLs published.
func checkOneCluster(t *testing.T, c *Cluster, want int) {
	t.Helper()
	ctx := clusterCtx(t)
	var cid uint64
	for _, m := range c.Members() {
		cli, err := m.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ml, err := cli.MemberList(ctx)
		if err != nil {
			t.Fatalf("%s: member list: %v", m.Name(), err)
		}
		if cid == 0 {
			cid = ml.Header.ClusterId
		}
		if ml.Header.ClusterId != cid {
			t.Fatalf("%s: cluster id %x, another member has %x", m.Name(), ml.Header.ClusterId, cid)
		}
		if len(ml.Members) != want {
			t.Fatalf("%s: %d members, want %d: %v", m.Name(), len(ml.Members), want, ml.Members)
		}
		for _, mm := range ml.Members {
			if mm.IsLearner || len(mm.ClientURLs) == 0 || mm.Name == "" {
				t.Fatalf("%s: member %+v is a learner or has not published its attributes", m.Name(), mm)
			}
		}
	}
}

func TestStartClusterThreeMembers(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{})
	ctx := clusterCtx(t)
	ms := c.Members()
	if len(ms) != 3 {
		t.Fatalf("%d members", len(ms))
	}
	checkOneCluster(t, c, 3)

	// Put through one member, linearizable get through each.
	first, err := ms[0].Client()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	for _, m := range ms {
		cli, err := m.Client()
		if err != nil {
			t.Fatal(err)
		}
		r, err := cli.Get(ctx, "k")
		cli.Close()
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
			t.Fatalf("%s: get: %v %v", m.Name(), err, r)
		}
	}
	// The cluster client reaches the cluster too.
	if _, err := c.Client().Put(ctx, "k2", "v2"); err != nil {
		t.Fatalf("cluster client put: %v", err)
	}

	// /mesh/status is the router's JSON on the client port.
	resp, err := http.Get(ms[1].ClientURLs()[0].String() + "/mesh/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Name         string `json:"name"`
		ClusterLabel string `json:"cluster_label"`
		Peers        []struct {
			Name      string `json:"name"`
			Reachable bool   `json:"reachable"`
		} `json:"peers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/mesh/status: %v", err)
	}
	if resp.Header.Get("Content-Type") == "" || st.Name != ms[1].PeerAddr() || st.ClusterLabel != DefaultInitialClusterToken || len(st.Peers) != 3 {
		t.Fatalf("/mesh/status = %+v (content type %q)", st, resp.Header.Get("Content-Type"))
	}
	for _, p := range st.Peers {
		if !p.Reachable {
			t.Errorf("peer %s unreachable in %+v", p.Name, st)
		}
	}

	// A cut link is routed around: writes through the member on the far
	// side of the cut from the leader still commit.
	c.Cut(0, 1)
	c.Cut(0, 2)
	c.Heal(0, 2)
	for i, m := range ms {
		cli, err := m.Client()
		if err != nil {
			t.Fatal(err)
		}
		_, err = cli.Put(ctx, fmt.Sprintf("cut-%d", i), "x")
		cli.Close()
		if err != nil {
			t.Fatalf("put via %s with link m1-m2 cut: %v", m.Name(), err)
		}
	}
}

// TestStartClusterFailsFast: one member that cannot start makes
// StartCluster fail at once instead of leaving the others waiting for a
// quorum until the context ends.
func TestStartClusterFailsFast(t *testing.T) {
	start := time.Now()
	c, err := StartCluster(context.Background(), 3, ClusterOptions{
		Network: embedtest.NewNetwork(),
		Logger:  zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)),
		Configure: func(i int, cfg *Config) {
			if i == 1 {
				cfg.MaxTxnOps = 0 // invalid
			}
		},
	})
	if err == nil {
		_ = c.Close()
		t.Fatal("StartCluster succeeded with an invalid member")
	}
	if !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Errorf("error does not say what was wrong: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("StartCluster took %v to fail", d)
	}
}

// With PeerAutoTLS (and no secret) every mesh link of the cluster is
// encrypted with ephemeral keys, and the status says so.
func TestClusterPeerAutoTLSEncryptsMeshLinks(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{Configure: func(_ int, cfg *Config) { cfg.PeerAutoTLS = true }})
	for _, m := range c.Members() {
		st := m.MeshStatus()
		if !st.Encrypted || st.Encryption != mesh.EncryptionEphemeral {
			t.Errorf("%s: encrypted %v, encryption %q", m.Name(), st.Encrypted, st.Encryption)
		}
		established := 0
		for _, cs := range st.Connections {
			if cs.State != "established" {
				continue
			}
			established++
			if !cs.Encrypted || cs.Encryption != mesh.EncryptionEphemeral {
				t.Errorf("%s: connection to %s: encrypted %v, encryption %q", m.Name(), cs.Peer, cs.Encrypted, cs.Encryption)
			}
		}
		if established == 0 {
			t.Errorf("%s: no established mesh connection", m.Name())
		}
	}
}
