package grpcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/raft/v3"

	"github.com/meshetcd/meshetcd/kvstore"
)

// HTTP endpoints of the client port, as etcd's etcdhttp package serves them
// (health.go, version.go, metrics.go, debug.go). etcdhttp itself cannot be
// imported: it links etcdserver.

const (
	healthStatusSuccess = "success"
	healthStatusError   = "error"
)

// NewHTTPHandler returns the handler for the non-gRPC traffic of the client
// port: /health, /livez, /readyz (with their per-check sub-paths), /version,
// /metrics (the default Prometheus registry, where the reused etcd packages
// register, plus cfg.MemberMetrics), /debug/pprof/ when cfg.EnablePprof, and whatever cfg.ExtraHTTP
// mounts; all behind etcd's CORS and host-whitelist checks.
func NewHTTPHandler(s kvstore.API, cfg Config) http.Handler {
	cfg = cfg.withDefaults(s)
	hh := newHTTPHandlers(s, cfg)
	mux := http.NewServeMux()
	hh.installHealth(mux)
	mux.HandleFunc("/version", hh.versionHandler)
	mux.Handle("/metrics", metricsHandler(cfg))
	if cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if cfg.Gateway != nil {
		mux.Handle("/v3/", cfg.Gateway)
	}
	if cfg.ExtraHTTP != nil {
		cfg.ExtraHTTP(mux)
	}
	ac := &accessController{lg: cfg.Logger, cors: cfg.CORS, hostWhitelist: cfg.HostWhitelist, next: mux}
	if cfg.ClientCertAuth && cfg.Gateway != nil {
		ac.gatewayCNRefused = s.AuthStore().IsAuthEnabled
	}
	return ac
}

// NewMetricsHandler is what etcd serves on --listen-metrics-urls: /metrics
// and the health endpoints, nothing else.
func NewMetricsHandler(s kvstore.API, cfg Config) http.Handler {
	cfg = cfg.withDefaults(s)
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(cfg))
	newHTTPHandlers(s, cfg).installHealth(mux)
	return mux
}

// metricsHandler serves the default registry (where the reused etcd
// packages register) plus the member's own series, if any.
func metricsHandler(cfg Config) http.Handler {
	if cfg.MemberMetrics == nil {
		return promhttp.Handler()
	}
	g := prometheus.Gatherers{prometheus.DefaultGatherer, cfg.MemberMetrics}
	return promhttp.InstrumentMetricHandler(prometheus.DefaultRegisterer, promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}

func newHTTPHandlers(s kvstore.API, cfg Config) *httpHandlers {
	return &httpHandlers{s: s, lg: cfg.Logger, version: cfg.Version, metrics: newHealthMetrics(), reqTimeout: requestTimeout(cfg.ElectionTimeout)}
}

// installHealth mounts /health, /livez and /readyz with etcd's checks.
func (hh *httpHandlers) installHealth(mux *http.ServeMux) {
	mux.HandleFunc("/health", hh.health)
	hh.installChecks(mux, "livez", map[string]healthCheck{
		"serializable_read": hh.readCheck(true),
	})
	hh.installChecks(mux, "readyz", map[string]healthCheck{
		"data_corruption":   hh.alarmCheck(pb.AlarmType_CORRUPT),
		"serializable_read": hh.readCheck(true),
		"linearizable_read": hh.readCheck(false),
		"non_learner":       hh.learnerCheck,
	})
}

// requestTimeout is etcd's ServerConfig.ReqTimeout: 5s plus two election
// timeouts, the budget of /health's read.
func requestTimeout(election time.Duration) time.Duration {
	return 5*time.Second + 2*election
}

type httpHandlers struct {
	s          kvstore.API
	lg         *zap.Logger
	version    string
	metrics    healthMetrics
	reqTimeout time.Duration
}

// health is etcd's /health: {"health":"true","reason":""}, or 503 with
// health "false" and a reason when an alarm is active (unless excluded with
// ?exclude=NOSPACE), when there is no leader (unless ?serializable=true) or
// when a read fails.
func (hh *httpHandlers) health(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		hh.lg.Warn("/health error", zap.Int("status-code", http.StatusMethodNotAllowed))
		return
	}
	serializable := r.URL.Query().Get("serializable") == "true"
	h := hh.checkAlarms(querySet(r, "exclude"))
	if h.Health == "true" {
		h = hh.checkLeader(serializable)
	}
	if h.Health == "true" {
		h = hh.checkAPI(r.Context(), serializable)
	}
	if h.Health == "true" {
		hh.metrics.success.Inc()
	} else {
		hh.metrics.failed.Inc()
	}
	d, _ := json.Marshal(h)
	if h.Health != "true" {
		http.Error(w, string(d), http.StatusServiceUnavailable)
		hh.lg.Warn("/health error", zap.String("output", string(d)), zap.Int("status-code", http.StatusServiceUnavailable))
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(d)
	hh.lg.Debug("/health OK", zap.Int("status-code", http.StatusOK))
}

// healthReport is etcd's etcdhttp.Health (the JSON etcdctl and probes parse).
type healthReport struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

func (hh *httpHandlers) checkAlarms(excluded map[string]struct{}) healthReport {
	for _, a := range hh.s.Alarms() {
		if _, ok := excluded[a.Alarm.String()]; ok {
			continue
		}
		h := healthReport{Health: "false"}
		switch a.Alarm {
		case pb.AlarmType_NOSPACE:
			h.Reason = "ALARM NOSPACE"
		case pb.AlarmType_CORRUPT:
			h.Reason = "ALARM CORRUPT"
		default:
			h.Reason = "ALARM UNKNOWN"
		}
		hh.lg.Warn("serving /health false due to an alarm", zap.String("alarm", a.String()))
		return h
	}
	return healthReport{Health: "true"}
}

func (hh *httpHandlers) checkLeader(serializable bool) healthReport {
	if !serializable && uint64(hh.s.Leader()) == raft.None {
		hh.lg.Warn("serving /health false; no leader")
		return healthReport{Health: "false", Reason: "RAFT NO LEADER"}
	}
	return healthReport{Health: "true"}
}

func (hh *httpHandlers) checkAPI(ctx context.Context, serializable bool) healthReport {
	ctx, cancel := context.WithTimeout(ctx, hh.reqTimeout)
	defer cancel()
	if err := hh.rangeOne(ctx, serializable); err != nil {
		hh.lg.Warn("serving /health false; Range fails", zap.Error(err))
		return healthReport{Health: "false", Reason: fmt.Sprintf("RANGE ERROR:%s", err)}
	}
	return healthReport{Health: "true"}
}

// rangeOne is etcd's health read: one key-only range as root, so it works
// with auth enabled.
func (hh *httpHandlers) rangeOne(ctx context.Context, serializable bool) error {
	ctx = hh.s.AuthStore().WithRoot(ctx)
	_, err := hh.s.Range(ctx, &pb.RangeRequest{KeysOnly: true, Limit: 1, Serializable: serializable})
	return err
}

// healthCheck is one named check of /livez or /readyz.
type healthCheck func(ctx context.Context) error

func (hh *httpHandlers) readCheck(serializable bool) healthCheck {
	return func(ctx context.Context) error { return hh.rangeOne(ctx, serializable) }
}

func (hh *httpHandlers) alarmCheck(at pb.AlarmType) healthCheck {
	return func(context.Context) error {
		for _, a := range hh.s.Alarms() {
			if a.Alarm == at {
				return fmt.Errorf("alarm activated: %s", at.String())
			}
		}
		return nil
	}
}

func (hh *httpHandlers) learnerCheck(context.Context) error {
	if hh.s.IsLearner() {
		return errors.New("not supported for learner")
	}
	return nil
}

// installChecks mounts /<kind> (all checks, ?exclude=name to skip some,
// ?verbose to list them) and /<kind>/<name> for each check, with etcd's
// plain-text output.
func (hh *httpHandlers) installChecks(mux *http.ServeMux, kind string, checks map[string]healthCheck) {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	root := "/" + kind
	mux.HandleFunc(root, hh.checkHandler(root, func(r *http.Request) (string, bool) {
		excluded := querySet(r, "exclude")
		run := make([]string, 0, len(names))
		for _, n := range names {
			if _, ok := excluded[n]; ok {
				delete(excluded, n)
				continue
			}
			run = append(run, n)
		}
		if len(excluded) > 0 {
			// Excluding an unknown check does not fail the request
			// (etcd's compatibility rule).
			missing := make([]string, 0, len(excluded))
			for n := range excluded {
				missing = append(missing, fmt.Sprintf("%q", n))
			}
			hh.lg.Warn("some health checks cannot be excluded", zap.String("missing-health-checks", strings.Join(missing, ",")))
		}
		return hh.runChecks(r.Context(), kind, checks, run)
	}))
	for _, n := range names {
		sub := root + "/" + n
		mux.HandleFunc(sub, hh.checkHandler(sub, func(r *http.Request) (string, bool) {
			return hh.runChecks(r.Context(), kind, checks, []string{n})
		}))
	}
}

func (hh *httpHandlers) runChecks(ctx context.Context, kind string, checks map[string]healthCheck, names []string) (string, bool) {
	var out bytes.Buffer
	ok := true
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			fmt.Fprintf(&out, "[-]%s failed: %v\n", n, err)
			ok = false
			hh.metrics.record(kind, n, healthStatusError)
		} else {
			fmt.Fprintf(&out, "[+]%s ok\n", n)
			hh.metrics.record(kind, n, healthStatusSuccess)
		}
	}
	return out.String(), ok
}

func (hh *httpHandlers) checkHandler(path string, run func(*http.Request) (string, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			hh.lg.Warn("Health request error", zap.String("path", path), zap.Int("status-code", http.StatusMethodNotAllowed))
			return
		}
		reason, ok := run(r)
		if !ok {
			http.Error(w, reason, http.StatusServiceUnavailable)
			hh.lg.Error("Health check error", zap.String("path", path), zap.String("reason", reason), zap.Int("status-code", http.StatusServiceUnavailable))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			fmt.Fprint(w, reason)
		}
		fmt.Fprint(w, "ok\n")
	}
}

// versionInfo is etcd's version.Versions plus meshetcd's own version.
type versionInfo struct {
	Server   string `json:"etcdserver"`
	Cluster  string `json:"etcdcluster"`
	Storage  string `json:"storage"`
	Meshetcd string `json:"meshetcd"`
}

func (hh *httpHandlers) versionHandler(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	storage := "unknown"
	if v := schema.ReadStorageVersion(hh.s.Backend().ReadTx()); v != nil {
		storage = v.String()
	}
	vs := versionInfo{
		Server: version.Version,
		// meshetcd members all run the same code, so the cluster version
		// is ours (major.minor.0, as etcd prints a decided cluster version).
		Cluster:  version.Cluster(version.Version) + ".0",
		Storage:  storage,
		Meshetcd: hh.version,
	}
	w.Header().Set("Content-Type", "application/json")
	b, err := json.Marshal(&vs)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(b)
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	return false
}

func querySet(r *http.Request, name string) map[string]struct{} {
	set := make(map[string]struct{})
	for _, q := range r.URL.Query()[name] {
		if q != "" {
			set[q] = struct{}{}
		}
	}
	return set
}

// healthMetrics are etcd's health metrics (etcdhttp registers them at init;
// we register on first use and share them afterwards, since the default
// registry is process-wide anyway).
type healthMetrics struct {
	success prometheus.Counter
	failed  prometheus.Counter
	gauge   *prometheus.GaugeVec
	counter *prometheus.CounterVec
}

func newHealthMetrics() healthMetrics {
	return healthMetrics{
		success: registerShared(prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "health_success",
			Help: "The total number of successful health checks",
		})),
		failed: registerShared(prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "health_failures",
			Help: "The total number of failed health checks",
		})),
		gauge: registerShared(prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "etcd", Subsystem: "server", Name: "healthcheck",
			Help: "The result of each kind of healthcheck.",
		}, []string{"type", "name"})),
		counter: registerShared(prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "etcd", Subsystem: "server", Name: "healthchecks_total",
			Help: "The total number of each kind of healthcheck.",
		}, []string{"type", "name", "status"})),
	}
}

func (m healthMetrics) record(kind, name, status string) {
	v := 0.0
	if status == healthStatusSuccess {
		v = 1.0
	}
	m.gauge.With(prometheus.Labels{"type": kind, "name": name}).Set(v)
	m.counter.With(prometheus.Labels{"type": kind, "name": name, "status": status}).Inc()
}

// registerShared registers c in the default registry, or returns the
// collector already registered under the same name (a second member or
// handler in the same process).
func registerShared[C prometheus.Collector](c C) C {
	if err := prometheus.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
