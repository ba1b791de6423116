package raftnode

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"

	"github.com/meshetcd/meshetcd/internal/raftnet"
	"github.com/meshetcd/meshetcd/internal/testutil"
)

// testCluster is size members on one raft-message network.
type testCluster struct {
	net      *raftnet.Network
	nodes    []*Node
	appliers []*recordingApplier
}

func startCluster(t *testing.T, size int) *testCluster {
	t.Helper()
	c := &testCluster{net: raftnet.New()}
	t.Cleanup(c.net.Close)
	var peers []raft.Peer
	for i := 1; i <= size; i++ {
		peers = append(peers, raft.Peer{ID: uint64(i)})
	}
	base := t.TempDir()
	for i := 1; i <= size; i++ {
		cfg := testNodeConfig(t, filepath.Join(base, fmt.Sprint(i)), 1000)
		cfg.Transport = c.net.Transport()
		n, err := Create(cfg, Bootstrap{NodeID: uint64(i), ClusterID: 0x42, Peers: peers})
		if err != nil {
			t.Fatalf("Create member %d: %v", i, err)
		}
		c.net.Register(n)
		a := &recordingApplier{node: n}
		if err := n.Start(a); err != nil {
			t.Fatalf("Start member %d: %v", i, err)
		}
		t.Cleanup(n.Stop)
		c.nodes, c.appliers = append(c.nodes, n), append(c.appliers, a)
	}
	return c
}

// leader waits until every running member knows the same leader and
// returns its index.
func (c *testCluster) leader(t *testing.T) int {
	t.Helper()
	lead := -1
	testutil.Eventually(t, waitTimeout, "an agreed leader", func() bool {
		var id uint64
		for _, n := range c.nodes {
			if n == nil {
				continue
			}
			if l := n.Lead(); l == 0 || id != 0 && l != id {
				return false
			} else {
				id = l
			}
		}
		lead = slices.IndexFunc(c.nodes, func(n *Node) bool { return n != nil && n.ID() == id })
		return lead >= 0
	})
	return lead
}

// stop takes member i off the network and stops it (a crash).
func (c *testCluster) stop(i int) {
	c.net.Unregister(c.nodes[i].ID())
	c.nodes[i].Stop()
	c.nodes[i] = nil
}

// proposeAndWait proposes count entries on member i and waits until every
// running member applied them all, in the same order.
func (c *testCluster) proposeAndWait(t *testing.T, i int, prefix string, count int) {
	t.Helper()
	for k := 0; k < count; k++ {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		err := c.nodes[i].Propose(ctx, []byte(fmt.Sprintf("%s%d", prefix, k)))
		cancel()
		if err != nil {
			t.Fatalf("Propose %d on member %d: %v", k, i+1, err)
		}
	}
	last := fmt.Sprintf("%s%d", prefix, count-1)
	for j, a := range c.appliers {
		if c.nodes[j] == nil {
			continue
		}
		testutil.Eventually(t, waitTimeout, fmt.Sprintf("member %d applies %s", j+1, last), func() bool {
			_, data, _ := a.snapshot()
			return slices.Contains(data, last)
		})
	}
	var want []string
	for j, a := range c.appliers {
		if c.nodes[j] == nil {
			continue
		}
		_, data, _ := a.snapshot()
		if want == nil {
			want = data
		} else if !slices.Equal(data, want) {
			t.Fatalf("member %d applied %v, another member %v", j+1, data, want)
		}
	}
}

// TestClusterReplicatesToEveryMember: a proposal made on a follower is
// forwarded to the leader, committed, and applied by every member in the
// same order.
func TestClusterReplicatesToEveryMember(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader(t)
	follower := (lead + 1) % 3
	c.proposeAndWait(t, follower, "f", 20)
	c.proposeAndWait(t, lead, "l", 20)
}

// TestClusterElectsANewLeaderWhenTheLeaderStops: the two remaining members
// of three elect a leader among themselves and keep committing.
func TestClusterElectsANewLeaderWhenTheLeaderStops(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader(t)
	c.proposeAndWait(t, lead, "before", 5)
	c.stop(lead)
	newLead := c.leader(t)
	if newLead == lead {
		t.Fatalf("the stopped member %d is still the leader", lead+1)
	}
	c.proposeAndWait(t, newLead, "after", 5)
}
