package kvstore

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	fdruntime "go.etcd.io/etcd/pkg/v3/runtime"
	"go.etcd.io/etcd/server/v3/features"
)

// serverMetrics are the etcd_server_* series that etcd defines in its
// etcdserver package (which we do not import), with etcd's names and help
// so dashboards keep working. They belong to one Server and are registered
// only when Config.MetricsRegisterer is set.
type serverMetrics struct {
	leaderChanges   prometheus.Counter
	proposalsFailed prometheus.Counter
	proposalsPend   prometheus.Gauge
	// proposalsRetried counts copies of pending requests proposed again,
	// by reason (proposeretry.go); ours, not etcd's.
	proposalsRetried *prometheus.CounterVec
	leaseExpired     prometheus.Counter
	// requestDuration is etcd's per-request-type latency (Range,
	// ReadonlyTxn and every proposed type), labelled type and success.
	requestDuration *prometheus.HistogramVec
	promoteSucceed  prometheus.Counter
	promoteFailed   *prometheus.CounterVec
	snapshotApply   prometheus.Gauge
	// heartbeatFailures counts heartbeats the leader sent late (raftnode's
	// HeartbeatSendLate), etcd's sign of a starved Ready loop.
	heartbeatFailures prometheus.Counter
	collectors        []prometheus.Collector
	// requestObservers caches requestDuration's series of the request
	// types every client request takes (see observeRequest).
	requestObservers map[string]*[2]atomic.Pointer[requestObserver]
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
		// etcd keeps this one under etcd_debugging_.
		leaseExpired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd_debugging", Subsystem: "server",
			Name: "lease_expired_total", Help: "The total number of expired leases."}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "server",
			Name: "request_duration_seconds", Help: "Response latency distribution in seconds for each type.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"type", "success"}),
		requestObservers: newRequestObservers("Range", "ReadonlyTxn", "Put", "DeleteRange", "Txn"),
		promoteSucceed: prometheus.NewCounter(prometheus.CounterOpts(opts("learner_promote_successes",
			"The total number of successful learner promotions while this member is leader."))),
		promoteFailed: prometheus.NewCounterVec(prometheus.CounterOpts(opts("learner_promote_failures",
			"The total number of failed learner promotions (likely learner not ready) while this member is leader.")), []string{"Reason"}),
		snapshotApply: prometheus.NewGauge(prometheus.GaugeOpts(opts("snapshot_apply_in_progress_total",
			"1 if the server is applying the incoming snapshot. 0 if none."))),
	}
	m.proposalsRetried = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshetcd", Subsystem: "server",
		Name: "proposals_retried_total", Help: "The total number of pending requests proposed again, by why their last copy may have been lost."},
		[]string{"reason"})
	for _, reason := range []string{retryLeaderOrRoute, retryTerm, retryLaterApplied, retryTimeout} {
		m.proposalsRetried.WithLabelValues(reason) // exported at 0 before the first
	}
	m.heartbeatFailures = prometheus.NewCounter(prometheus.CounterOpts(opts("heartbeat_send_failures_total",
		"The total number of leader heartbeat send failures (likely overloaded from slow disk).")))
	// meshetcd has no --feature-gates: it behaves as etcd with the default
	// gates, and says so the way etcd does.
	featureEnabled := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "etcd_server_feature_enabled",
		Help: "Whether or not a feature is enabled. 1 is enabled, 0 is not."}, []string{"name", "stage"})
	for feature, spec := range features.DefaultEtcdServerFeatureGates {
		featureEnabled.With(prometheus.Labels{"name": string(feature), "stage": string(spec.PreRelease)}).Set(boolGauge(spec.Default))
	}
	for _, all := range []struct{ name, stage string }{{"AllAlpha", "ALPHA"}, {"AllBeta", "BETA"}} {
		featureEnabled.With(prometheus.Labels{"name": all.name, "stage": all.stage}).Set(0)
	}
	versionOpts := prometheus.GaugeOpts(opts("version", "Which version is running. 1 for 'server_version' label with current version."))
	versionOpts.ConstLabels = prometheus.Labels{"server_version": version.Version}
	goVersionOpts := prometheus.GaugeOpts(opts("go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version."))
	goVersionOpts.ConstLabels = prometheus.Labels{"server_go_version": runtime.Version()}
	idOpts := prometheus.GaugeOpts(opts("id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."))
	idOpts.ConstLabels = prometheus.Labels{"server_id": s.memberID.String()}
	m.collectors = []prometheus.Collector{
		m.leaderChanges, m.proposalsFailed, m.proposalsPend, m.leaseExpired,
		m.requestDuration, m.promoteSucceed, m.promoteFailed, m.snapshotApply, m.heartbeatFailures, featureEnabled,
		m.proposalsRetried,
		// etcd's file descriptor gauges, read at scrape time.
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "os", Subsystem: "fd", Name: "used", Help: "The number of used file descriptors."},
			func() float64 { return fdGauge(s.lg, fdruntime.FDUsage) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "os", Subsystem: "fd", Name: "limit", Help: "The file descriptor limit."},
			func() float64 { return fdGauge(s.lg, fdruntime.FDLimit) }),
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

// observeRequest records one request's latency in
// etcd_server_request_duration_seconds, as etcd's v3_server does.
//
// The series of the KV request types are looked up once and kept:
// WithLabelValues hashes both labels and takes the vector's lock on every
// call. They are still created on first use, so /metrics lists the same
// series as etcd's at any time.
func (m *serverMetrics) observeRequest(kind string, start time.Time, err error) {
	took := time.Since(start).Seconds()
	slots := m.requestObservers[kind]
	if slots == nil {
		m.requestDuration.WithLabelValues(kind, strconv.FormatBool(err == nil)).Observe(took)
		return
	}
	slot := &slots[0]
	if err == nil {
		slot = &slots[1]
	}
	o := slot.Load()
	if o == nil {
		// Racing first calls resolve the same series; either store wins.
		o = &requestObserver{m.requestDuration.WithLabelValues(kind, strconv.FormatBool(err == nil))}
		slot.Store(o)
	}
	o.Observe(took)
}

// requestObserver is one resolved series of requestDuration.
type requestObserver struct{ prometheus.Observer }

// newRequestObservers makes empty cache slots (failed, succeeded) for
// kinds; the map is never written afterwards.
func newRequestObservers(kinds ...string) map[string]*[2]atomic.Pointer[requestObserver] {
	m := make(map[string]*[2]atomic.Pointer[requestObserver], len(kinds))
	for _, k := range kinds {
		m[k] = new([2]atomic.Pointer[requestObserver])
	}
	return m
}

func fdGauge(lg *zap.Logger, read func() (uint64, error)) float64 {
	n, err := read()
	if err != nil {
		lg.Warn("failed to read file descriptor usage", zap.Error(err))
		return 0
	}
	return float64(n)
}

// requestType names a proposal the way etcd's getRequestType does: the
// type of its one non-nil request field ("Put", "LeaseGrant", ...).
func requestType(r *pb.InternalRaftRequest) string {
	switch {
	case r.Range != nil:
		return "Range"
	case r.Put != nil:
		return "Put"
	case r.DeleteRange != nil:
		return "DeleteRange"
	case r.Txn != nil:
		return "Txn"
	case r.Compaction != nil:
		return "Compaction"
	case r.LeaseGrant != nil:
		return "LeaseGrant"
	case r.LeaseRevoke != nil:
		return "LeaseRevoke"
	case r.LeaseCheckpoint != nil:
		return "LeaseCheckpoint"
	case r.Alarm != nil:
		return "Alarm"
	case r.Authenticate != nil:
		return "Authenticate"
	case r.AuthEnable != nil:
		return "AuthEnable"
	case r.AuthDisable != nil:
		return "AuthDisable"
	case r.AuthStatus != nil:
		return "AuthStatus"
	case r.AuthUserAdd != nil:
		return "AuthUserAdd"
	case r.AuthUserDelete != nil:
		return "AuthUserDelete"
	case r.AuthUserChangePassword != nil:
		return "AuthUserChangePassword"
	case r.AuthUserGrantRole != nil:
		return "AuthUserGrantRole"
	case r.AuthUserGet != nil:
		return "AuthUserGet"
	case r.AuthUserRevokeRole != nil:
		return "AuthUserRevokeRole"
	case r.AuthRoleAdd != nil:
		return "AuthRoleAdd"
	case r.AuthRoleGrantPermission != nil:
		return "AuthRoleGrantPermission"
	case r.AuthRoleGet != nil:
		return "AuthRoleGet"
	case r.AuthRoleRevokePermission != nil:
		return "AuthRoleRevokePermission"
	case r.AuthRoleDelete != nil:
		return "AuthRoleDelete"
	case r.AuthUserList != nil:
		return "AuthUserList"
	case r.AuthRoleList != nil:
		return "AuthRoleList"
	case r.ClusterVersionSet != nil:
		return "ClusterVersionSet"
	case r.ClusterMemberAttrSet != nil:
		return "ClusterMemberAttrSet"
	case r.DowngradeInfoSet != nil:
		return "DowngradeInfoSet"
	case r.DowngradeVersionTest != nil:
		return "DowngradeVersionTest"
	default:
		return "Unknown"
	}
}
