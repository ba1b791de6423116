package grpcapi

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The client-facing metrics etcd's v3rpc exposes (v3rpc/grpc.go and
// metrics.go), so etcd dashboards and alerts work unchanged:
// grpc_server_* (started/handled/msg counts per method and code),
// etcd_network_client_grpc_{sent,received}_bytes_total and
// etcd_server_client_requests_total. They live in the default registry,
// which is process-wide; registerShared makes a second server in the same
// process reuse the first one's collectors instead of panicking.
type grpcMetrics struct {
	rpc            *rpcMetrics
	sentBytes      prometheus.Counter
	receivedBytes  prometheus.Counter
	clientRequests *prometheus.CounterVec
	// lastUnary caches the clientRequests counter of the last client
	// version seen on a unary request: nearly every request repeats it, and
	// the cache skips hashing the labels and the vector's lookup.
	lastUnary *atomic.Pointer[versionCounter]
}

type versionCounter struct {
	ver string
	c   prometheus.Counter
}

// countClientRequest counts one request of kind ("unary" or "stream") from
// a client of version ver in etcd_server_client_requests_total.
func (m grpcMetrics) countClientRequest(kind, ver string) {
	if kind != "unary" || m.lastUnary == nil {
		m.clientRequests.WithLabelValues(kind, ver).Inc()
		return
	}
	if vc := m.lastUnary.Load(); vc != nil && vc.ver == ver {
		vc.c.Inc()
		return
	}
	c := m.clientRequests.WithLabelValues(kind, ver)
	c.Inc()
	m.lastUnary.Store(&versionCounter{ver: ver, c: c})
}

func newGRPCMetrics() grpcMetrics {
	return grpcMetrics{
		rpc: registerShared(newRPCMetrics()),
		sentBytes: registerShared(prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: "client_grpc_sent_bytes_total",
			Help: "The total number of bytes sent to grpc clients.",
		})),
		receivedBytes: registerShared(prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "network", Name: "client_grpc_received_bytes_total",
			Help: "The total number of bytes received from grpc clients.",
		})),
		clientRequests: registerShared(prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "client_requests_total",
			Help: "The total number of client requests per client version.",
		}, []string{"type", "client_api_version"})),
		lastUnary: new(atomic.Pointer[versionCounter]),
	}
}

// watchMetrics are etcd's watch send loop timings (v3rpc/metrics.go), shared
// process-wide like grpcMetrics.
type watchMetrics struct {
	stream, perEvent, control, progress prometheus.Histogram
}

func newWatchMetrics() watchMetrics {
	h := func(name, help string) prometheus.Histogram {
		return registerShared(prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd_debugging", Subsystem: "server", Name: name, Help: help,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}))
	}
	return watchMetrics{
		stream: h("watch_send_loop_watch_stream_duration_seconds",
			"The total duration in seconds of running through the send loop watch stream response all events."),
		perEvent: h("watch_send_loop_watch_stream_duration_per_event_seconds",
			"The average duration in seconds of running through the send loop watch stream response, per event."),
		control: h("watch_send_loop_control_stream_duration_seconds",
			"The total duration in seconds of running through the send loop control stream response."),
		progress: h("watch_send_loop_progress_duration_seconds",
			"The total duration in seconds of running through the progress loop control stream response."),
	}
}

// observeEvents records one sent watch response of n events; like etcd, a
// response without events counts an infinite per-event time.
func (m watchMetrics) observeEvents(start time.Time, n int) {
	d := time.Since(start).Seconds()
	m.stream.Observe(d)
	m.perEvent.Observe(d / float64(n))
}
