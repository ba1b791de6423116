package integration

import (
	"bufio"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerHTTPOnlyMetrics are etcd metric families that exist only because etcd
// members talk to each other over rafthttp (the peer HTTP streams and
// pipelines, and the snapshot transfer over them), or only in etcd's
// grpc-proxy. meshetcd has neither: its raft traffic runs over the mesh and
// is measured by the meshetcd_mesh_* families instead. Every entry says why.
var peerHTTPOnlyMetrics = map[string]string{
	// rafthttp: one stream/pipeline per peer; the mesh has links, not
	// streams, so per-link figures are meshetcd_mesh_link_*.
	"etcd_network_active_peers":                            "rafthttp stream count (mesh: meshetcd_mesh_links_up)",
	"etcd_network_disconnected_peers_total":                "rafthttp stream disconnects (mesh: meshetcd_mesh_connections_lost_total)",
	"etcd_network_peer_received_failures_total":            "rafthttp receive failures (mesh: meshetcd_mesh_handshake_failures_total, connections_lost_total)",
	"etcd_network_snapshot_send_success":                   "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_send_failures":                  "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_send_total_duration_seconds":    "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_send_inflights_total":           "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_receive_success":                "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_receive_failures":               "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_receive_total_duration_seconds": "snapshots over rafthttp (mesh: bulk transfer)",
	"etcd_network_snapshot_receive_inflights_total":        "snapshots over rafthttp (mesh: bulk transfer)",
	// etcd links its grpc-proxy into the server binary, which registers
	// these at init; meshetcd has no grpc-proxy.
	"etcd_grpc_proxy_cache_hits_total":          "etcd grpc-proxy only",
	"etcd_grpc_proxy_cache_keys_total":          "etcd grpc-proxy only",
	"etcd_grpc_proxy_cache_misses_total":        "etcd grpc-proxy only",
	"etcd_grpc_proxy_events_coalescing_total":   "etcd grpc-proxy only",
	"etcd_grpc_proxy_watchers_coalescing_total": "etcd grpc-proxy only",
}

// etcdLazyMetrics are etcd families that etcd 3.7.3 exports only after a
// while or after an event, so a short run of etcd lacks them while
// meshetcd, which has the figures at once, may already export them.
var etcdLazyMetrics = map[string]string{
	"etcd_network_peer_round_trip_time_seconds": "etcd observes its prober's RTT every 30 s (rafthttp statusMonitoringInterval); meshetcd from the first heartbeat",
}

// TestMetricNamesMatchEtcd drives the same small traffic (puts, a range, a
// watch, a lease) at etcd 3.7.3 and at meshetcd, on 1 and on 3 members,
// scrapes every member's /metrics and compares the metric family names:
// every etcd family must be exported by meshetcd unless it is listed in
// peerHTTPOnlyMetrics, and meshetcd may add only its own meshetcd_* families.
func TestMetricNamesMatchEtcd(t *testing.T) {
	if bins.etcd == "" {
		t.Skip("needs etcd 3.7.3 (make etcd builds bin/etcd; make test-integration does)")
	}
	for _, size := range []int{1, 3} {
		t.Run(map[int]string{1: "1-member", 3: "3-members"}[size], func(t *testing.T) {
			etcdNames := scrapeAfterTraffic(t, StartCluster(t, ClusterOptions{Bin: bins.etcd, Size: size}))
			meshNames := scrapeAfterTraffic(t, StartCluster(t, ClusterOptions{Size: size}))
			for _, n := range etcdNames {
				if _, ok := peerHTTPOnlyMetrics[n]; !ok && !slices.Contains(meshNames, n) {
					t.Errorf("etcd exports %s, meshetcd does not", n)
				}
			}
			for _, n := range meshNames {
				if _, lazy := etcdLazyMetrics[n]; lazy {
					continue
				}
				if !strings.HasPrefix(n, "meshetcd_") && !slices.Contains(etcdNames, n) {
					t.Errorf("meshetcd exports %s, etcd does not (meshetcd's own series must be meshetcd_*)", n)
				}
			}
			for _, must := range []string{"etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
				"etcd_server_proposals_committed_total", "etcd_server_id", "etcd_server_version", "meshetcd_mesh_links_up"} {
				if !slices.Contains(meshNames, must) {
					t.Errorf("meshetcd does not export %s", must)
				}
			}
			if size > 1 && !slices.Contains(meshNames, "meshetcd_mesh_link_round_trip_time_seconds") {
				t.Errorf("a 3-member meshetcd exports no per-link mesh metrics")
			}
			for _, must := range []string{"etcd_network_peer_round_trip_time_seconds", "etcd_network_peer_sent_bytes_total",
				"etcd_network_peer_received_bytes_total", "meshetcd_mesh_link_loss_ratio", "meshetcd_mesh_link_state", "meshetcd_mesh_path_hops"} {
				if size > 1 && !slices.Contains(meshNames, must) {
					t.Errorf("a 3-member meshetcd does not export the per-link health series %s", must)
				}
			}
		})
	}
}

// scrapeAfterTraffic runs puts, a range, a watch and a lease against the
// cluster, then returns the union of the family names on every member's
// /metrics, sorted.
func scrapeAfterTraffic(t *testing.T, c *Cluster) []string {
	t.Helper()
	cli := c.Client(t)
	wch := cli.Watch(clientv3.WithRequireLeader(ctx(t)), "metrics/", clientv3.WithPrefix())
	for _, k := range []string{"metrics/a", "metrics/b"} {
		if _, err := cli.Put(ctx(t), k, "v"); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	select {
	case wr := <-wch:
		if err := wr.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
	case <-time.After(reqTimeout):
		t.Fatal("no watch event")
	}
	if _, err := cli.Get(ctx(t), "metrics/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("range: %v", err)
	}
	l, err := cli.Grant(ctx(t), 60)
	if err != nil {
		t.Fatalf("lease grant: %v", err)
	}
	if _, err := cli.KeepAliveOnce(ctx(t), l.ID); err != nil {
		t.Fatalf("lease keep-alive: %v", err)
	}
	var names []string
	for _, m := range c.Members {
		code, body := httpGet(t, m.ClientURL+"/metrics")
		if code != 200 {
			t.Fatalf("GET %s/metrics: %d", m.ClientURL, code)
		}
		names = append(names, metricFamilies(body)...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// metricFamilies lists the families ("# TYPE <name> <type>") of a
// Prometheus text exposition.
func metricFamilies(body string) []string {
	var names []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	return names
}
