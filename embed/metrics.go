package embed

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshetcd/meshetcd/mesh"
)

// meshCollector exports the mesh router's status as meshetcd_mesh_* series,
// read at scrape time. Per-link series are labelled with the neighbour's
// mesh peer name (host:port of its peer URL); they restart from zero when a
// link is re-established, which rate() treats as a counter reset.
type meshCollector struct {
	status func() mesh.Status

	linksUp, peers, reachable, routeHops                           *prometheus.Desc
	linkRTT, linkSent, linkRecv, linkFramesSent, linkFramesRecv    *prometheus.Desc
	linkDrops, linkQueued                                          *prometheus.Desc
	relayed, rerouted, dropped, handshakeFailures, connectionsLost *prometheus.Desc

	// Per-peer link health, cumulative across link re-establishments
	// (mesh.LinkStatus): etcd's peer series where the meaning matches,
	// labelled like etcd's (To/From) with the peer's mesh name.
	peerRTT, peerSent, peerRecv, peerSentFailures         *prometheus.Desc
	linkLoss, linkState, pathHops, linksLost, localHealth *prometheus.Desc
}

func newMeshCollector(status func() mesh.Status) *meshCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("meshetcd_mesh_"+name, help, labels, nil)
	}
	return &meshCollector{
		status:            status,
		linksUp:           d("links_up", "Established mesh connections to direct neighbours."),
		peers:             d("peers", "Mesh peers known from the gossiped topology, this member included."),
		reachable:         d("reachable_peers", "Other mesh peers this member has a route to (direct or relayed)."),
		routeHops:         d("route_hops", "Hops on the current route to a peer (1 = direct link).", "peer"),
		linkRTT:           d("link_round_trip_time_seconds", "Latest heartbeat round-trip time of the link to a neighbour.", "peer"),
		linkSent:          d("link_sent_bytes_total", "Bytes sent on the current link to a neighbour.", "peer"),
		linkRecv:          d("link_received_bytes_total", "Bytes received on the current link from a neighbour.", "peer"),
		linkFramesSent:    d("link_sent_frames_total", "Frames sent on the current link to a neighbour.", "peer"),
		linkFramesRecv:    d("link_received_frames_total", "Frames received on the current link from a neighbour.", "peer"),
		linkDrops:         d("link_dropped_frames_total", "Frames dropped because the link's send queue was full.", "peer"),
		linkQueued:        d("link_queued_bytes", "Bytes waiting in the link's send queue.", "peer"),
		relayed:           d("relayed_frames_total", "Frames this member forwarded for other peers."),
		rerouted:          d("rerouted_frames_total", "Frames sent on another route after their first route failed."),
		dropped:           d("dropped_frames_total", "Frames the router dropped, by reason.", "reason"),
		handshakeFailures: d("handshake_failures_total", "Mesh handshakes that failed or were refused (wrong secret, wrong cluster token, ...)."),
		connectionsLost:   d("connections_lost_total", "Established mesh connections that were lost."),
		peerRTT: prometheus.NewDesc("etcd_network_peer_round_trip_time_seconds",
			"Round-Trip-Time histogram between peers (mesh heartbeats on the direct link).", []string{"To"}, nil),
		peerSent: prometheus.NewDesc("etcd_network_peer_sent_bytes_total",
			"The total number of bytes sent to peers (on the direct mesh link).", []string{"To"}, nil),
		peerRecv: prometheus.NewDesc("etcd_network_peer_received_bytes_total",
			"The total number of bytes received from peers (on the direct mesh link).", []string{"From"}, nil),
		peerSentFailures: prometheus.NewDesc("etcd_network_peer_sent_failures_total",
			"The total number of send failures to peers (frames refused by a full mesh send queue).", []string{"To"}, nil),
		linkLoss:    d("link_loss_ratio", "Share of heartbeats to a neighbour not answered within one heartbeat interval (moving average).", "peer"),
		linkState:   d("link_state", "State of the direct link to a peer: 1 for the current state, 0 for the others.", "peer", "state"),
		pathHops:    d("path_hops", "Hops on the path traffic (Raft's included) to a peer takes; 0 when unreachable.", "peer", "next_hop"),
		linksLost:   d("peer_links_lost_total", "Direct links to a peer that were lost (cumulative across re-establishments).", "peer"),
		localHealth: d("local_health", "Lifeguard local health score: 0 healthy, up to 8 when this process runs late (lengthens link dead timeouts)."),
	}
}

func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.linksUp, c.peers, c.reachable, c.routeHops, c.linkRTT, c.linkSent, c.linkRecv,
		c.linkFramesSent, c.linkFramesRecv, c.linkDrops, c.linkQueued, c.relayed, c.rerouted, c.dropped,
		c.handshakeFailures, c.connectionsLost, c.peerRTT, c.peerSent, c.peerRecv, c.peerSentFailures,
		c.linkLoss, c.linkState, c.pathHops, c.linksLost, c.localHealth} {
		ch <- d
	}
}

func (c *meshCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	up := 0
	for _, conn := range st.Connections {
		if conn.State != "established" {
			continue
		}
		up++
		peer := string(conn.Peer)
		if rtt, err := time.ParseDuration(conn.RTT); err == nil {
			gauge(c.linkRTT, rtt.Seconds(), peer)
		}
		counter(c.linkSent, conn.BytesOut, peer)
		counter(c.linkRecv, conn.BytesIn, peer)
		counter(c.linkFramesSent, conn.FramesOut, peer)
		counter(c.linkFramesRecv, conn.FramesIn, peer)
		counter(c.linkDrops, conn.Drops, peer)
		gauge(c.linkQueued, float64(conn.Queued), peer)
	}
	gauge(c.linksUp, float64(up))
	gauge(c.peers, float64(len(st.Peers)))
	gauge(c.reachable, float64(len(st.Routes)))
	for _, r := range st.Routes {
		gauge(c.routeHops, float64(r.Hops), string(r.Dest))
	}
	counter(c.relayed, st.Counters["forwarded"])
	counter(c.rerouted, st.Counters["rerouted"])
	counter(c.handshakeFailures, st.Counters["handshake_failures"])
	counter(c.connectionsLost, st.Counters["connections_lost"])
	for name, v := range st.Counters {
		if reason, ok := strings.CutPrefix(name, "drop_"); ok {
			counter(c.dropped, v, reason)
		}
	}
	gauge(c.localHealth, float64(st.LocalHealth))
	for _, l := range st.Links {
		peer := string(l.Peer)
		counter(c.peerSent, l.BytesSent, peer)
		counter(c.peerRecv, l.BytesReceived, peer)
		if l.SendFailures > 0 { // like etcd, whose series appears with the first failure
			counter(c.peerSentFailures, l.SendFailures, peer)
		}
		counter(c.linksLost, l.LinksLost, peer)
		if l.RTTCount > 0 {
			buckets := make(map[float64]uint64, len(mesh.RTTBuckets))
			var cum uint64
			for i, ub := range mesh.RTTBuckets {
				cum += l.RTTHistogram[i]
				buckets[ub] = cum
			}
			ch <- prometheus.MustNewConstHistogram(c.peerRTT, l.RTTCount, l.RTTSum, buckets, peer)
		}
		gauge(c.linkLoss, l.Loss, peer)
		for _, s := range []string{mesh.LinkUp, mesh.LinkSuspect, mesh.LinkDegraded, mesh.LinkDown} {
			v := 0.0
			if s == l.State {
				v = 1
			}
			gauge(c.linkState, v, peer, s)
		}
		next := ""
		if len(l.Path) > 0 {
			next = string(l.Path[0])
		}
		gauge(c.pathHops, float64(l.Hops), peer, next)
	}
}
