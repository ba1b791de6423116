package grpcapi

import (
	"math"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/meshetcd/meshetcd/kvstore"
)

// Defaults, equal to etcd v3.7.3's (embed/config.go, server/config).
const (
	DefaultMaxRequestBytes             = 1.5 * 1024 * 1024
	DefaultMaxTxnOps                   = 128
	DefaultWarningUnaryRequestDuration = 300 * time.Millisecond
	DefaultGRPCKeepAliveMinTime        = 5 * time.Second
	DefaultGRPCKeepAliveInterval       = 2 * time.Hour
	DefaultGRPCKeepAliveTimeout        = 20 * time.Second

	// grpcOverheadBytes is what etcd adds to --max-request-bytes for the gRPC
	// receive limit, so that an oversized request reaches the server's own
	// size check and gets etcd's "request is too large" error instead of a
	// transport error.
	grpcOverheadBytes = 512 * 1024
	maxSendBytes      = math.MaxInt32
)

// Config configures the client-facing services. Zero values take etcd's
// defaults.
type Config struct {
	Logger *zap.Logger // nil means zap.NewNop()

	// MaxRequestBytes is etcd's --max-request-bytes. Zero means the
	// store's configured value (itself 1.5 MiB by default).
	MaxRequestBytes uint
	// MaxTxnOps is etcd's --max-txn-ops. Zero means the store's configured
	// value (itself 128 by default).
	MaxTxnOps uint
	// MaxConcurrentStreams is etcd's --max-concurrent-streams (default
	// math.MaxUint32).
	MaxConcurrentStreams uint32

	// gRPC keepalive, etcd's --grpc-keepalive-{min-time,interval,timeout}.
	GRPCKeepAliveMinTime  time.Duration
	GRPCKeepAliveInterval time.Duration
	GRPCKeepAliveTimeout  time.Duration

	// WarningUnaryRequestDuration is etcd's
	// --warning-unary-request-duration: slower unary requests are logged at
	// warn level instead of debug (default 300ms).
	WarningUnaryRequestDuration time.Duration

	// EnablePprof mounts /debug/pprof/ on the HTTP handler (etcd
	// --enable-pprof).
	EnablePprof bool

	// Version is meshetcd's own version, reported as "meshetcd" by /version.
	Version string

	// CORS is etcd's --cors: origins allowed to make browser requests to
	// the HTTP endpoints. Empty means any ("*"), etcd's default.
	CORS []string
	// HostWhitelist is etcd's --host-whitelist: Host header values accepted
	// on plain-HTTP requests. Empty means any ("*"), etcd's default.
	HostWhitelist []string

	// ClientCertAuth is etcd's --client-cert-auth. With auth enabled, the
	// JSON gateway then refuses TLS requests carrying a client certificate
	// with a CN, like etcd (the CN would not be the user there).
	ClientCertAuth bool

	// Gateway, when set, is mounted at /v3/ on the HTTP handler (etcd's
	// JSON gateway, see NewGateway).
	Gateway http.Handler

	// ExtraHTTP, when set, is called with the HTTP mux before it is
	// returned, so the caller can mount more endpoints (e.g. /mesh/status).
	ExtraHTTP func(mux *http.ServeMux)

	// MemberMetrics, when set, is gathered into /metrics together with the
	// process-wide default registry: the series that belong to one member
	// (etcd_server_*, the mesh's), which cannot share a registry with the
	// other members of an in-process cluster.
	MemberMetrics prometheus.Gatherer

	// WatchProgressNotifyInterval is etcd's
	// --experimental-watch-progress-notify-interval: how often watchers that
	// asked for progress notifications get one (default 10 minutes, at
	// least 100ms, plus up to 10% jitter).
	WatchProgressNotifyInterval time.Duration

	// ElectionTimeout decides how long a stream that required a leader
	// survives without one (three election timeouts, like etcd). Zero means
	// the kvstore's configured election timeout.
	ElectionTimeout time.Duration
}

func (c Config) withDefaults(s kvstore.Info) Config {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	// Limits default to the store's, so one flag value governs both the
	// validation here and kvstore's own proposal-size check.
	if c.MaxRequestBytes == 0 && s != nil {
		c.MaxRequestBytes = s.Config().MaxRequestBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxTxnOps == 0 && s != nil {
		c.MaxTxnOps = s.Config().MaxTxnOps
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = math.MaxUint32
	}
	if c.GRPCKeepAliveMinTime == 0 {
		c.GRPCKeepAliveMinTime = DefaultGRPCKeepAliveMinTime
	}
	if c.GRPCKeepAliveInterval == 0 {
		c.GRPCKeepAliveInterval = DefaultGRPCKeepAliveInterval
	}
	if c.GRPCKeepAliveTimeout == 0 {
		c.GRPCKeepAliveTimeout = DefaultGRPCKeepAliveTimeout
	}
	if c.WarningUnaryRequestDuration == 0 {
		c.WarningUnaryRequestDuration = DefaultWarningUnaryRequestDuration
	}
	if c.Version == "" {
		c.Version = "0.0.0-dev"
	}
	if c.ElectionTimeout == 0 && s != nil {
		c.ElectionTimeout = s.Config().ElectionTimeout
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	return c
}

// NewGRPCServer builds the gRPC server for one member: etcd's KV,
// Maintenance, Cluster, Auth, Watch, Lease, Lock and Election services and
// the standard gRPC health service, with etcd's server options and
// interceptors. The caller serves it (see Serve) and stops it.
//
// The health service reports NOT_SERVING until s is ready and again once s
// stops; the goroutine that does this exits when s stops.
func NewGRPCServer(s kvstore.API, cfg Config) *grpc.Server {
	cfg = cfg.withDefaults(s)

	metrics := newGRPCMetrics()
	rpcSeries := &rpcMethodTable{m: metrics.rpc}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newByteCountingCodec(metrics)),
		// etcd's order: logging, metrics, then the checks, so refused
		// requests are logged and counted too.
		grpc.ChainUnaryInterceptor(
			newLogUnaryInterceptor(cfg),
			rpcSeries.unaryInterceptor(),
			newUnaryInterceptor(s, metrics),
		),
		grpc.ChainStreamInterceptor(
			rpcSeries.streamInterceptor(),
			newStreamInterceptor(s, cfg, metrics),
		),
		grpc.MaxRecvMsgSize(int(cfg.MaxRequestBytes + grpcOverheadBytes)),
		grpc.MaxSendMsgSize(maxSendBytes),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.GRPCKeepAliveMinTime,
			PermitWithoutStream: false,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.GRPCKeepAliveInterval,
			Timeout: cfg.GRPCKeepAliveTimeout,
		}),
	}
	gs := grpc.NewServer(opts...)

	registerServices(gs, s, cfg)

	hs := health.NewServer()
	// health.NewServer starts out SERVING; etcd only serves once the member
	// is ready, so start NOT_SERVING and flip when it is.
	hs.SetServingStatus(allGRPCServices, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go trackHealth(s, hs, cfg.Logger)

	// Zero-valued series for every method, as etcd does, so rates exist
	// before the first call.
	rpcSeries.initialize(gs)

	return gs
}

// streamWorkers is how many goroutines serve RPCs, each taking one stream at
// a time, so most RPCs run on a goroutine whose stack has already grown: a
// fresh goroutine per RPC (gRPC's default, and etcd's) starts with a small
// stack and copies it while growing into the handler, 6% of the server's
// CPU under puts and 15% under serializable reads. A few per CPU keep the
// CPUs busy; every worker holds its stack between RPCs, so there are not
// more. When all are busy (a Watch keeps its worker, a put waits for its
// commit), gRPC starts a goroutine for the RPC as before.
func streamWorkers() uint32 { return uint32(8 * runtime.GOMAXPROCS(0)) }

// allGRPCServices is the health service name meaning "the whole server".
const allGRPCServices = ""

// trackHealth moves the gRPC health status with the member's lifecycle. It is
// owned by s: it returns when s stops.
func trackHealth(s kvstore.Info, hs *health.Server, lg *zap.Logger) {
	select {
	case <-s.ReadyNotify():
		lg.Info("grpc service status changed",
			zap.String("service", allGRPCServices),
			zap.String("status", healthpb.HealthCheckResponse_SERVING.String()))
		hs.SetServingStatus(allGRPCServices, healthpb.HealthCheckResponse_SERVING)
	case <-s.StopNotify():
	}
	<-s.StopNotify()
	// Shutdown sets NOT_SERVING and makes later updates no-ops.
	hs.Shutdown()
}

// registerServices registers every etcd service on gs.
func registerServices(gs *grpc.Server, s kvstore.API, cfg Config) {
	kv := newKVServer(s, cfg)
	pb.RegisterKVServer(gs, kv)
	pb.RegisterMaintenanceServer(gs, newMaintenanceServer(s, cfg))
	pb.RegisterClusterServer(gs, newClusterServer(s))
	pb.RegisterAuthServer(gs, newAuthServer(s))
	w := newWatchServer(cfg.Logger, s, newWatchConfig(cfg.Logger, cfg.MaxRequestBytes, cfg.WatchProgressNotifyInterval))
	pb.RegisterWatchServer(gs, w)
	le := newLeaseServer(cfg.Logger, s)
	pb.RegisterLeaseServer(gs, le)
	registerLockElection(gs, s, cfg.Logger, kv, le, w)
}
