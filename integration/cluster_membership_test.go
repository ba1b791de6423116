package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Membership through etcdctl: member list/add (--learner)/promote/remove,
// endpoint status --cluster, move-leader, and etcd's add-then-start-with-
// --initial-cluster-state-existing flow. Same expectations for meshetcd and
// etcd 3.7.3.

type ctlMember struct {
	ID         uint64   `json:"ID"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner"`
}

func ctlMemberList(t testing.TB, c *Cluster, via int) []ctlMember {
	t.Helper()
	out := c.MustCtl(t, []int{via}, "member", "list", "-w", "json")
	var resp struct {
		Members []ctlMember `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("member list -w json: %v\n%s", err, out)
	}
	return resp.Members
}

var addedRe = regexp.MustCompile(`Member ([0-9a-f]+) added to cluster`)

func TestClusterMembershipEtcdctl(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		c := StartCluster(t, ClusterOptions{Bin: bin})
		c.WaitHealthy(t)

		// endpoint status --cluster: every member, one leader, one term.
		out := c.MustCtl(t, []int{0}, "endpoint", "status", "--cluster", "-w", "json")
		var sts []struct {
			Endpoint string `json:"Endpoint"`
			Status   struct {
				Header struct {
					MemberID uint64 `json:"member_id"`
				} `json:"header"`
				Leader   uint64 `json:"leader"`
				RaftTerm uint64 `json:"raftTerm"`
			} `json:"Status"`
		}
		if err := json.Unmarshal([]byte(out), &sts); err != nil || len(sts) != 3 {
			t.Fatalf("endpoint status --cluster: %v\n%s", err, out)
		}
		leaders := 0
		for _, s := range sts {
			if s.Status.Leader == s.Status.Header.MemberID {
				leaders++
			}
			if s.Status.Leader != sts[0].Status.Leader || s.Status.RaftTerm != sts[0].Status.RaftTerm {
				t.Errorf("endpoint status disagrees: %s", out)
			}
		}
		if leaders != 1 {
			t.Errorf("%d members report themselves leader:\n%s", leaders, out)
		}

		// member add --learner, then start it with --initial-cluster-state existing.
		lm := c.AddMember(t, 0, true)
		ml := ctlMemberList(t, c, 1)
		if len(ml) != 4 {
			t.Fatalf("member list after add: %+v", ml)
		}
		var lid uint64
		for _, m := range ml {
			if m.Name == lm.Name {
				lid = m.ID
				if !m.IsLearner {
					t.Errorf("%s added with --learner is not a learner: %+v", m.Name, m)
				}
			}
		}
		// A learner serves (serializable) reads once caught up.
		if _, err := c.Client(t, 0).Put(ctx(t), "via-voter", "1"); err != nil {
			t.Fatal(err)
		}
		// member promote: retried while the learner is not yet in sync.
		if out := c.CtlRetry(t, []int{0}, "member", "promote", fmt.Sprintf("%x", lid)); !strings.Contains(out, "promoted") {
			t.Errorf("member promote output: %s", out)
		}
		for _, m := range ctlMemberList(t, c, 2) {
			if m.IsLearner {
				t.Errorf("still a learner after promote: %+v", m)
			}
		}
		c.WaitHealthy(t)

		// move-leader to the new member.
		c.Leader()
		if lm.ID == 0 {
			t.Fatalf("no id learnt for %s", lm.Name)
		}
		out = c.MustCtl(t, []int{0, 1, 2, 3}, "move-leader", fmt.Sprintf("%x", lm.ID))
		if !strings.Contains(out, "Leadership transferred") {
			t.Errorf("move-leader output: %s", out)
		}
		if l := c.WaitLeader(t); l != lm.Idx {
			t.Errorf("leader after move-leader is %s, want %s", c.Members[l].Name, lm.Name)
		}

		// member add (voter) + start existing, then member remove.
		vm := c.AddMember(t, 1, false)
		c.WaitHealthy(t)
		if n := len(ctlMemberList(t, c, 0)); n != 5 {
			t.Fatalf("member list has %d members, want 5", n)
		}
		vid := vm.ID
		if vid == 0 {
			c.Leader()
			vid = vm.ID
		}
		out = c.CtlRetry(t, []int{0}, "member", "remove", fmt.Sprintf("%x", vid))
		if !strings.Contains(out, "removed from cluster") {
			t.Errorf("member remove output: %s", out)
		}
		ml = ctlMemberList(t, c, 0)
		if len(ml) != 4 {
			t.Fatalf("member list after remove: %+v", ml)
		}
		for _, m := range ml {
			if m.Name == vm.Name {
				t.Errorf("removed member still listed: %+v", m)
			}
		}
		// The removed member stops (etcd exits once it learns it was removed).
		exited := false
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if vm.Exited() {
				exited = true
				break
			}
		}
		if !exited {
			t.Errorf("%s: the removed member %s still runs 30 s after its removal", c.kind(), vm.Name)
		}
		vm.Kill()
		c.Members = c.Members[:4]
		c.WaitHealthy(t)
		if _, err := c.Client(t, 3).Put(ctx(t), "after-remove", "1"); err != nil {
			t.Fatalf("put after remove: %v", err)
		}
	})
}

// --join --peers: a new member joins a running cluster through one member,
// as a learner promoted automatically (meshetcd only: etcd has no --join).
func TestClusterJoinFlag(t *testing.T) {
	c := StartCluster(t, ClusterOptions{})
	c.WaitHealthy(t)
	m := c.StartExtra(t, nil, true, "--join", "--peers", strings.TrimPrefix(c.Members[1].PeerURL, "http://"))
	begin := time.Now()
	waitVoters(t, c, 4)
	t.Logf("joined member promoted to voter %v after it was ready", time.Since(begin).Round(time.Millisecond))
	if _, err := c.Client(t, m.Idx).Put(ctx(t), "joined", "1"); err != nil {
		t.Fatalf("put via joined member: %v", err)
	}
	// The joined member survives a restart (it recovers from its data dir).
	m.Kill()
	c.Restart(m.Idx)
	c.WaitHealthy(t)
}

// waitVoters waits until member list shows n members, none a learner.
func waitVoters(t testing.TB, c *Cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ml := ctlMemberList(t, c, 0)
		voters := 0
		for _, mm := range ml {
			if !mm.IsLearner {
				voters++
			}
		}
		if len(ml) == n && voters == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %d voters within %v: %+v", n, readyTimeout, ml)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --discovery-size 3 --peers: members that know only one other member
// bootstrap exactly one cluster, whatever the start order.
func TestClusterDiscoverySize(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2}, {2, 0, 1}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			c := &Cluster{t: t, Bin: bins.meshetcd, Opts: ClusterOptions{Token: "mtest-discovery"}, dir: t.TempDir()}
			for i := 0; i < 3; i++ {
				c.Members = append(c.Members, c.newMember(i))
			}
			for _, i := range order {
				m := c.Members[i]
				seed := strings.TrimPrefix(c.Members[(i+2)%3].PeerURL, "http://") // the previous one, in a ring
				m.Proc = c.procFor(m, append(c.memberArgs(m, "", ""), "--discovery-size", "3", "--peers", seed))
				m.Proc.start()
			}
			c.WaitReady()
			c.WaitLeader(t)
			c.WaitHealthy(t)
			clusterIDs := map[uint64]bool{}
			for i := range c.Members {
				st, err := c.Status(ctx(t), c.statusClient(i), i)
				if err != nil {
					t.Fatal(err)
				}
				clusterIDs[st.Header.ClusterId] = true
				if ml := ctlMemberList(t, c, i); len(ml) != 3 {
					t.Errorf("member list via %d: %+v", i, ml)
				}
			}
			if len(clusterIDs) != 1 {
				t.Fatalf("members report %d cluster ids: %v", len(clusterIDs), clusterIDs)
			}
			if _, err := c.Client(t, 0).Put(ctx(t), "k", strconv.Itoa(len(order))); err != nil {
				t.Fatal(err)
			}
		})
	}
}
