package embed

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshetcd/meshetcd/mesh"
)

// Per-link health reaches Prometheus under etcd's peer names and labels
// (To/From), with the histogram cumulative over mesh.RTTBuckets, and
// meshetcd_mesh_* for what etcd has no name for.
func TestMeshCollectorExportsLinkHealth(t *testing.T) {
	hist := make([]uint64, len(mesh.RTTBuckets))
	hist[0], hist[3] = 2, 1 // two round trips ≤ 100 µs, one ≤ 800 µs
	st := mesh.Status{Links: []mesh.LinkStatus{
		{Peer: "10.0.0.2:2380", State: mesh.LinkUp, Loss: 0, Path: []mesh.PeerName{"10.0.0.2:2380"}, Hops: 1,
			BytesSent: 1000, BytesReceived: 2000, RTTHistogram: hist, RTTSum: 0.001, RTTCount: 3},
		{Peer: "10.0.0.3:2380", State: mesh.LinkDegraded, Loss: 0.4, Path: []mesh.PeerName{"10.0.0.2:2380", "10.0.0.3:2380"}, Hops: 2,
			SendFailures: 5, LinksLost: 2},
	}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newMeshCollector(func() mesh.Status { return st }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{} // name{first label value} for the plain series
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 {
				key := mf.GetName() + "{" + m.GetLabel()[0].GetName() + "=" + m.GetLabel()[0].GetValue() + "}"
				values[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		switch mf.GetName() {
		case "etcd_network_peer_round_trip_time_seconds":
			m := mf.GetMetric()
			if len(m) != 1 || m[0].GetLabel()[0].GetName() != "To" || m[0].GetHistogram().GetSampleCount() != 3 ||
				m[0].GetHistogram().GetBucket()[3].GetCumulativeCount() != 3 || m[0].GetHistogram().GetBucket()[0].GetCumulativeCount() != 2 {
				t.Errorf("round-trip histogram: %v", m)
			}
		case "meshetcd_mesh_link_state":
			for _, m := range mf.GetMetric() {
				peer, state := m.GetLabel()[0].GetValue(), m.GetLabel()[1].GetValue()
				on := (peer == "10.0.0.2:2380" && state == mesh.LinkUp) || (peer == "10.0.0.3:2380" && state == mesh.LinkDegraded)
				if (m.GetGauge().GetValue() == 1) != on {
					t.Errorf("link_state{peer=%s,state=%s} = %v", peer, state, m.GetGauge().GetValue())
				}
			}
		}
	}
	for key, want := range map[string]float64{
		`etcd_network_peer_sent_bytes_total{To=10.0.0.2:2380}`:       1000,
		`etcd_network_peer_received_bytes_total{From=10.0.0.2:2380}`: 2000,
		`etcd_network_peer_sent_failures_total{To=10.0.0.3:2380}`:    5,
		`meshetcd_mesh_link_loss_ratio{peer=10.0.0.3:2380}`:          0.4,
		`meshetcd_mesh_peer_links_lost_total{peer=10.0.0.3:2380}`:    2,
	} {
		if got, ok := values[key]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", key, got, ok, want)
		}
	}
	if _, ok := values[`etcd_network_peer_sent_failures_total{To=10.0.0.2:2380}`]; ok {
		t.Error("a peer without send failures has an etcd_network_peer_sent_failures_total series (etcd creates it on the first failure)")
	}
}
