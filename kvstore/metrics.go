package kvstore

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"go.etcd.io/etcd/api/v3/version"
)

// serverMetrics are the etcd_server_* series that etcd defines in its
// etcdserver package (which we do not import), with etcd's names and help
// so dashboards keep working. They belong to one Server and are registered
// only when Config.MetricsRegisterer is set.
type serverMetrics struct {
	leaderChanges   prometheus.Counter
	proposalsFailed prometheus.Counter
	proposalsPend   prometheus.Gauge
	leaseExpired    prometheus.Counter
	collectors      []prometheus.Collector
}

func newServerMetrics(s *Server) *serverMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "etcd", Subsystem: "server", Name: name, Help: help}
	}
	boolGauge := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	m := &serverMetrics{
		leaderChanges:   prometheus.NewCounter(prometheus.CounterOpts(opts("leader_changes_seen_total", "The number of leader changes seen."))),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts(opts("proposals_failed_total", "The total number of failed proposals seen."))),
		proposalsPend:   prometheus.NewGauge(prometheus.GaugeOpts(opts("proposals_pending", "The current number of pending proposals to commit."))),
		leaseExpired:    prometheus.NewCounter(prometheus.CounterOpts(opts("lease_expired_total", "The total number of expired leases."))),
	}
	versionOpts := prometheus.GaugeOpts(opts("version", "Which version is running. 1 for 'server_version' label with current version."))
	versionOpts.ConstLabels = prometheus.Labels{"server_version": version.Version}
	goVersionOpts := prometheus.GaugeOpts(opts("go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version."))
	goVersionOpts.ConstLabels = prometheus.Labels{"server_go_version": runtime.Version()}
	idOpts := prometheus.GaugeOpts(opts("id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."))
	idOpts.ConstLabels = prometheus.Labels{"server_id": s.memberID.String()}
	m.collectors = []prometheus.Collector{
		m.leaderChanges, m.proposalsFailed, m.proposalsPend, m.leaseExpired,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.")),
			func() float64 { return boolGauge(s.r.Lead() != 0) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.")),
			func() float64 { return boolGauge(s.isLeader()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("proposals_committed_total", "The total number of consensus proposals committed.")),
			func() float64 { return float64(s.CommittedIndex()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("proposals_applied_total", "The total number of consensus proposals applied.")),
			func() float64 { return float64(s.AppliedIndex()) }),
		prometheus.NewGaugeFunc(versionOpts, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(goVersionOpts, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(idOpts, func() float64 { return 1 }),
	}
	return m
}

// register adds every series to r; on failure nothing stays registered.
func (m *serverMetrics) register(r prometheus.Registerer) error {
	for i, c := range m.collectors {
		if err := r.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				r.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("kvstore: metrics already registered (one member per registry): %w", err)
			}
			return fmt.Errorf("kvstore: register metrics: %w", err)
		}
	}
	return nil
}

func (m *serverMetrics) unregister(r prometheus.Registerer) {
	for _, c := range m.collectors {
		r.Unregister(c)
	}
}
