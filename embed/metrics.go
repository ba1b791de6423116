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
	}
}

func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.linksUp, c.peers, c.reachable, c.routeHops, c.linkRTT, c.linkSent, c.linkRecv,
		c.linkFramesSent, c.linkFramesRecv, c.linkDrops, c.linkQueued, c.relayed, c.rerouted, c.dropped,
		c.handshakeFailures, c.connectionsLost} {
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
}
