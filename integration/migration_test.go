package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshetcd/meshetcd/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Migration between etcd 3.7.3 and meshetcd, as README "Migrating from
// etcd" describes it: stop every member, start the other binary on the same
// data directories with the same flags. The data files are etcd's, so keys,
// revisions, leases, members and the cluster id survive both ways.

// TestMigrateEtcdToMeshetcdAndBack: a 1- and a 3-member etcd cluster are
// restarted as meshetcd and then as etcd again; every step keeps the state
// the previous one left, including writes made under meshetcd.
func TestMigrateEtcdToMeshetcdAndBack(t *testing.T) {
	if bins.etcd == "" {
		t.Skip("needs etcd 3.7.3 (make etcd builds bin/etcd; make test-integration does)")
	}
	for _, size := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-member", size), func(t *testing.T) {
			c := StartCluster(t, ClusterOptions{Bin: bins.etcd, Size: size})
			writeMigrationData(t, c.Client(t), "etcd")
			asEtcd := readClusterState(t, c)

			switchBinary(t, c, bins.meshetcd)
			asMesh := readClusterState(t, c)
			compareClusterStates(t, "etcd → meshetcd", asEtcd, asMesh)
			writeMigrationData(t, c.Client(t), "meshetcd")
			asMesh = readClusterState(t, c)

			switchBinary(t, c, bins.etcd)
			compareClusterStates(t, "meshetcd → etcd", asMesh, readClusterState(t, c))
		})
	}
}

// TestEtcdutlOnMeshetcdData: etcd's offline tools work on meshetcd's files.
// A snapshot saved from meshetcd and restored with `etcdutl snapshot
// restore` starts as meshetcd with the keys and leases, and `etcdutl
// defrag` on a stopped meshetcd data directory leaves it usable.
func TestEtcdutlOnMeshetcdData(t *testing.T) {
	c := StartCluster(t, ClusterOptions{Size: 1})
	writeMigrationData(t, c.Client(t), "meshetcd")
	before := readClusterState(t, c)
	snap := filepath.Join(t.TempDir(), "snap.db")
	c.MustCtl(t, nil, "snapshot", "save", snap)
	if out := runEtcdutl(t, "snapshot", "status", snap, "-w", "table"); !strings.Contains(out, "3.7.0") {
		t.Errorf("etcdutl snapshot status shows no storage version 3.7.0:\n%s", out)
	}

	t.Run("defrag", func(t *testing.T) {
		m := c.Members[0]
		m.Stop()
		runEtcdutl(t, "defrag", "--data-dir", m.DataDir)
		m.Restart()
		c.WaitLeader(t)
		compareClusterStates(t, "etcdutl defrag", before, readClusterState(t, c))
	})

	t.Run("snapshot-restore", func(t *testing.T) {
		// A fresh one-member cluster from the snapshot: new member and
		// cluster ids (etcdutl derives them from its flags), same data.
		peer := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
		client := fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
		dataDir := filepath.Join(t.TempDir(), "restored")
		initial := "restored=" + peer
		runEtcdutl(t, "snapshot", "restore", snap, "--name", "restored", "--data-dir", dataDir,
			"--initial-cluster", initial, "--initial-advertise-peer-urls", peer, "--initial-cluster-token", "restored-token")
		p := StartProc(t, ProcOptions{NoDefaults: true, Args: []string{"--name", "restored", "--data-dir", dataDir,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", initial, "--initial-cluster-token", "restored-token"}})
		cli := p.Client(t)
		got := readState(t, cli)
		if !slices.Equal(got.KVs, before.KVs) {
			t.Errorf("restored keys differ:\n got  %q\n want %q", got.KVs, before.KVs)
		}
		if !slices.Equal(got.Leases, before.Leases) {
			t.Errorf("restored leases differ:\n got  %q\n want %q", got.Leases, before.Leases)
		}
		if _, err := cli.Put(ctx(t), "after-restore", "ok"); err != nil {
			t.Errorf("put on the restored member: %v", err)
		}
	})
}

// clusterState is what a migration must keep.
type clusterState struct {
	ClusterID uint64
	Members   []string // id name peer-urls client-urls learner
	Revision  int64
	KVs       []string // key=value create/mod/version lease
	Leases    []string // id granted-ttl keys
}

func readClusterState(t *testing.T, c *Cluster) clusterState {
	t.Helper()
	return readState(t, c.Client(t))
}

func readState(t *testing.T, cli *clientv3.Client) clusterState {
	t.Helper()
	var st clusterState
	ml, err := cli.MemberList(ctx(t))
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	st.ClusterID = ml.Header.ClusterId
	for _, m := range ml.Members {
		st.Members = append(st.Members, fmt.Sprintf("%x %s %v %v %v", m.ID, m.Name, m.PeerURLs, m.ClientURLs, m.IsLearner))
	}
	slices.Sort(st.Members)
	resp, err := cli.Get(ctx(t), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatalf("get all: %v", err)
	}
	st.Revision = resp.Header.Revision
	for _, kv := range resp.Kvs {
		st.KVs = append(st.KVs, fmt.Sprintf("%s=%s %d/%d/%d %x", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	ls, err := cli.Leases(ctx(t))
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	for _, l := range ls.Leases {
		ttl, err := cli.TimeToLive(ctx(t), l.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatalf("lease time-to-live %x: %v", l.ID, err)
		}
		var keys []string
		for _, k := range ttl.Keys {
			keys = append(keys, string(k))
		}
		slices.Sort(keys)
		st.Leases = append(st.Leases, fmt.Sprintf("%x %d %v", l.ID, ttl.GrantedTTL, keys))
	}
	slices.Sort(st.Leases)
	return st
}

func compareClusterStates(t *testing.T, step string, want, got clusterState) {
	t.Helper()
	if got.ClusterID != want.ClusterID {
		t.Errorf("%s: cluster id %x, want %x", step, got.ClusterID, want.ClusterID)
	}
	if !slices.Equal(got.Members, want.Members) {
		t.Errorf("%s: members\n got  %q\n want %q", step, got.Members, want.Members)
	}
	// Restarting may add internal raft entries but never a revision.
	if got.Revision != want.Revision {
		t.Errorf("%s: revision %d, want %d", step, got.Revision, want.Revision)
	}
	if !slices.Equal(got.KVs, want.KVs) {
		t.Errorf("%s: keys\n got  %q\n want %q", step, got.KVs, want.KVs)
	}
	if !slices.Equal(got.Leases, want.Leases) {
		t.Errorf("%s: leases\n got  %q\n want %q", step, got.Leases, want.Leases)
	}
}

// writeMigrationData writes keys (one overwritten, one deleted, one under a
// long lease) tagged with who wrote them.
func writeMigrationData(t *testing.T, cli *clientv3.Client, who string) {
	t.Helper()
	for _, kv := range [][2]string{{"a", "1"}, {"a", "2"}, {"b", "1"}, {"gone", "x"}} {
		if _, err := cli.Put(ctx(t), who+"/"+kv[0], kv[1]); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	if _, err := cli.Delete(ctx(t), who+"/gone"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	l, err := cli.Grant(ctx(t), 3600)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if _, err := cli.Put(ctx(t), who+"/leased", "v", clientv3.WithLease(l.ID)); err != nil {
		t.Fatalf("put with lease: %v", err)
	}
}

// switchBinary stops every member and starts bin on the same data
// directories with the same flags, then waits for a leader.
func switchBinary(t *testing.T, c *Cluster, bin string) {
	t.Helper()
	for _, m := range c.Members {
		m.Stop()
	}
	c.Bin = bin
	for _, m := range c.Members {
		m.Proc = c.procFor(m, m.Proc.args)
		m.Proc.start()
	}
	c.WaitReady()
	c.WaitLeader(t)
	for _, m := range c.Members {
		// meshetcd's /version names itself; etcd's does not.
		_, body := httpGet(t, m.ClientURL+"/version")
		if isMesh := strings.Contains(body, `"meshetcd"`); isMesh != (bin == bins.meshetcd) {
			t.Fatalf("member %s runs the wrong binary: /version = %s", m.Name, body)
		}
	}
}

// runEtcdutl runs etcd's etcdutl and fails the test on a non-zero exit.
func runEtcdutl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bins.etcdutl, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
