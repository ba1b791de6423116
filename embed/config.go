package embed

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/crypto/bcrypt"

	"github.com/meshetcd/meshetcd/mesh"
)

// Defaults, matching etcd 3.7's except where noted. The client and peer
// defaults use 127.0.0.1 rather than etcd's "localhost": etcd binds
// "localhost" to 127.0.0.1 anyway, and an explicit address avoids surprises
// on hosts where localhost resolves to ::1 first.
const (
	DefaultName                    = "default"
	DefaultListenClientURL         = "http://127.0.0.1:2379"
	DefaultAdvertiseClientURL      = "http://127.0.0.1:2379"
	DefaultListenPeerURL           = "http://127.0.0.1:2380"
	DefaultInitialAdvertisePeerURL = "http://127.0.0.1:2380"
	DefaultInitialClusterToken     = "etcd-cluster"
	DefaultSnapshotCount           = uint64(10000)
	DefaultHeartbeatInterval       = 100 * time.Millisecond
	DefaultElectionTimeout         = 1000 * time.Millisecond
	DefaultMaxRequestBytes         = uint(1.5 * 1024 * 1024)
	DefaultMaxTxnOps               = uint(128)
	DefaultAutoCompactionMode      = "periodic"
	DefaultAutoCompactionRetention = "0"
	DefaultLogLevel                = "info"
	DefaultLogFormat               = "json"
	DefaultLogOutput               = "default" // stderr, as etcd outside systemd
	DefaultAuthToken               = "simple"
	DefaultAuthTokenTTL            = 300 * time.Second
	DefaultTLSMinVersion           = "TLS1.2"

	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"

	CompactorModePeriodic = "periodic"
	CompactorModeRevision = "revision"

	// maxElectionTimeout is etcd's upper bound (embed.maxElectionMs).
	maxElectionTimeout = 50 * time.Second
)

// ErrUnsetAdvertiseClientURLs is etcd's error for an explicit
// --listen-client-urls without --advertise-client-urls (same text).
var ErrUnsetAdvertiseClientURLs = errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")

// Config is the whole configuration of one member. Build it with NewConfig
// (etcd's defaults) and change what you need; the zero Config is not valid.
type Config struct {
	// Name is the member name (etcd --name).
	Name string
	// DataDir holds the WAL, snapshots and backend (etcd layout under
	// DataDir/member). Empty means "<Name>.meshetcd" in the working directory.
	DataDir string

	// ListenClientURLs are the addresses the gRPC and HTTP client API is
	// served on (gRPC and HTTP share each port, like etcd): http:// in
	// plaintext, https:// over TLS with ClientTLSInfo (or ClientAutoTLS);
	// both kinds can be mixed. Port 0 picks a free port;
	// Member.ClientURLs reports it.
	ListenClientURLs []url.URL
	// AdvertiseClientURLs are published in the membership (member list).
	// An advertised URL with port 0 is replaced by the bound listener's
	// address, so tests can use port 0 throughout.
	AdvertiseClientURLs []url.URL
	// ListenMetricsURLs are extra listeners serving only /metrics and the
	// health endpoints (etcd --listen-metrics-urls). An https:// URL uses
	// ClientTLSInfo, as etcd does; http:// serves plaintext.
	ListenMetricsURLs []url.URL
	// ListenPeerURLs is where the member's mesh router listens (one
	// http:// or https:// URL; https:// with PeerTLSInfo makes every mesh
	// link mutual TLS, see PeerTLSInfo and MeshPassword).
	ListenPeerURLs []url.URL
	// AdvertisePeerURLs are this member's peer URLs in the membership; with
	// the cluster token they determine the member id, as in etcd. Other
	// members dial them; host:port of the first one in sorted order is the
	// member's mesh peer name, so the port must be fixed (not 0).
	AdvertisePeerURLs []url.URL

	// InitialCluster is etcd's --initial-cluster ("name=url,name=url").
	// Empty means this member alone: Name=AdvertisePeerURLs.
	InitialCluster      string
	InitialClusterState string // "new" or "existing"
	// InitialClusterToken is etcd's token and the mesh cluster label:
	// routers with different tokens refuse each other.
	InitialClusterToken string

	// Peers are extra mesh seeds ("host:port" of any reachable member's
	// peer address; --peers). The other members' peer URLs from
	// InitialCluster are seeds anyway. One reachable member is enough:
	// the mesh finds the rest by gossip.
	Peers []string
	// SeedResolver looks up the host names in Peers (every address a name
	// resolves to is a seed, re-resolved while the member runs); nil means
	// net.DefaultResolver.
	SeedResolver HostResolver
	// DiscoverySize, when > 0, forms a new cluster by mesh discovery
	// (--discovery-size): members started with the same size and token
	// find each other through Peers and bootstrap once exactly that many
	// have confirmed the same set; a member that finds a running cluster
	// joins it instead. Excludes InitialCluster and Join.
	DiscoverySize int
	// Join adds this member to a running cluster reachable through Peers
	// (--join): it is added as a learner, catches up, and is promoted to
	// a voter automatically.
	Join bool
	// JoinTimeout bounds how long a member joining a running cluster (Join,
	// InitialClusterState "existing", or discovery finding a cluster; not
	// a restart from a WAL) keeps asking for its membership when no member
	// answers: nobody reachable, a mesh refusal (wrong secret or token), or
	// a refused request. StartMember then fails with ErrJoinTimeout and
	// the reason from the last attempt, e.g. "mesh secret mismatch with
	// 10.0.0.1:2380", and cmd/meshetcd exits 1. etcd asks each peer URL
	// once (10 s timeout each) and exits; the mesh needs some time to
	// connect and retries with backoff, so the default is 60 s
	// (DefaultJoinTimeout). 0 means the default. The ctx given to
	// StartMember still bounds the whole start.
	JoinTimeout time.Duration
	// DiscoveryTimeout bounds mesh discovery (DiscoverySize): when the
	// members have not agreed on a cluster within it, StartMember fails
	// with ErrDiscoveryTimeout naming the members found and how many are
	// missing, and cmd/meshetcd exits 1 (--discovery-timeout). 0 means
	// the default, DefaultJoinTimeout.
	DiscoveryTimeout time.Duration
	// MeshPassword is the shared mesh secret: every mesh link is
	// authenticated and encrypted with it; a member with another secret is
	// refused. Empty means plaintext links (like etcd's http:// peers),
	// unless PeerAutoTLS is set.
	// cmd/meshetcd reads it from --mesh-password-file or
	// MESHETCD_MESH_PASSWORD, never from a visible command-line value.
	MeshPassword string
	// PeerAutoTLS is etcd's --peer-auto-tls: without a MeshPassword, every
	// mesh link is encrypted with fresh ephemeral keys (mesh
	// EphemeralEncryption). Like etcd's self-signed auto TLS, which skips
	// peer verification, this is confidential against passive
	// eavesdroppers but NOT authenticated: anyone who can reach the peer
	// port can join the mesh, and an active man in the middle can read and
	// alter traffic. All members must use the same mode. A MeshPassword,
	// if also set, takes precedence (noted in the log).
	PeerAutoTLS bool
	// StrictReconfigCheck is etcd's --strict-reconfig-check (default
	// true): refuse membership changes that could lose quorum.
	StrictReconfigCheck bool
	// PeerTLSInfo is etcd's peer TLS (--peer-cert-file, --peer-key-file,
	// --peer-trusted-ca-file, --peer-client-cert-auth, --peer-crl-file,
	// --peer-cert-allowed-cn, --peer-cert-allowed-hostname,
	// --peer-client-cert-file, --peer-client-key-file). With an https://
	// --listen-peer-urls and a certificate, every mesh connection is mutual
	// TLS checked with these settings (mesh.NewTLSConfig); a member whose
	// certificate is refused cannot connect. With a MeshPassword too, a
	// member needs both. With http:// the files are ignored (warned), as
	// in etcd; PeerAutoTLS is ignored when a certificate is given.
	PeerTLSInfo transport.TLSInfo
	// MeshTransport is how the mesh router dials and listens; nil means
	// TCP. StartCluster sets it from ClusterOptions.Network.
	MeshTransport mesh.Transport
	// MeshTuning, when set, adjusts the mesh router's configuration after
	// meshetcd filled it in (timeouts for a WAN, test speed-ups).
	MeshTuning func(*mesh.Config)

	SnapshotCount     uint64
	HeartbeatInterval time.Duration // etcd --heartbeat-interval (one raft tick)
	ElectionTimeout   time.Duration // etcd --election-timeout
	MaxRequestBytes   uint
	MaxTxnOps         uint
	// QuotaBackendBytes: 0 means etcd's default (2 GiB); negative disables.
	QuotaBackendBytes int64
	// UnsafeNoFsync disables fsync: faster, and loses acknowledged writes
	// on a machine crash. Never in production.
	UnsafeNoFsync bool

	// AutoCompactionMode is "periodic" or "revision"; AutoCompactionRetention
	// is a duration ("1h", or a bare number of hours) for periodic and a
	// revision count for revision. "0" disables auto compaction.
	AutoCompactionMode      string
	AutoCompactionRetention string

	// gRPC server knobs, etcd's --max-concurrent-streams,
	// --grpc-keepalive-{min-time,interval,timeout} and
	// --warning-unary-request-duration. Zero means etcd's default.
	MaxConcurrentStreams        uint32
	GRPCKeepAliveMinTime        time.Duration
	GRPCKeepAliveInterval       time.Duration
	GRPCKeepAliveTimeout        time.Duration
	WarningUnaryRequestDuration time.Duration
	// WatchProgressNotifyInterval is etcd's --watch-progress-notify-interval
	// (0 means etcd's default, 10 minutes).
	WatchProgressNotifyInterval time.Duration

	// ClientTLSInfo is etcd's client TLS, used by the https:// client
	// URLs (ignored, with a warning, by http:// ones): --cert-file,
	// --key-file, --client-cert-file/--client-key-file (the certificate the
	// JSON gateway presents to its own port when client certificates are
	// required; default the server's), --trusted-ca-file (requires and
	// verifies client certificates, as in etcd), --client-cert-auth,
	// --client-crl-file (CRLFile) and --client-cert-allowed-hostname
	// (AllowedHostnames). The files are re-read on every TLS handshake, so
	// replacing them rotates the certificates without a restart.
	// ClientTLSInfo.ClientCertAuth also makes a verified client
	// certificate's CN the user when auth is enabled and no token is sent.
	ClientTLSInfo transport.TLSInfo
	// ClientAutoTLS is etcd's --auto-tls: without ClientTLSInfo files, a
	// self-signed certificate for the client URLs' hosts is generated in
	// <data-dir>/fixtures/client, valid for SelfSignedCertValidity years.
	ClientAutoTLS bool
	// SelfSignedCertValidity is etcd's --self-signed-cert-validity in
	// years (default 1).
	SelfSignedCertValidity uint
	// CipherSuites is etcd's --cipher-suites (Go's names, e.g.
	// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); empty leaves Go's choice.
	CipherSuites []string
	// TlsMinVersion and TlsMaxVersion are etcd's --tls-min-version and
	// --tls-max-version: "TLS1.2", "TLS1.3", or "" for max (Go decides).
	TlsMinVersion string
	TlsMaxVersion string

	// EnableGRPCGateway serves etcd's JSON gateway (POST /v3/kv/put, ...)
	// on the client ports (etcd --enable-grpc-gateway, default true).
	EnableGRPCGateway bool

	// AuthToken is etcd's --auth-token: "simple" (the default; tokens
	// are valid only on the member that issued them) or
	// "jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256[,ttl=5m]" (signed
	// tokens every member verifies). etcd's auth.NewTokenProvider checks
	// it when the member starts.
	AuthToken string
	// AuthTokenTTL is the lifetime of a simple token (--auth-token-ttl);
	// 0 means etcd's default, 300 s. JWT tokens take ttl= in AuthToken.
	AuthTokenTTL time.Duration
	// BcryptCost is the cost of hashing user passwords (--bcrypt-cost).
	// As in etcd, a value outside bcrypt's [4, 31] is logged and replaced
	// by the default, 10.
	BcryptCost uint

	// EnablePprof serves net/http/pprof under /debug/pprof/ on the client
	// ports, like etcd.
	EnablePprof bool

	// Logger, when set, is used as is and the Log* fields are ignored.
	Logger     *zap.Logger
	LogLevel   string   // debug, info, warn, error, panic, fatal
	LogFormat  string   // json or console
	LogOutputs []string // "default", "stderr", "stdout" or file paths
}

// NewConfig returns a Config with etcd's defaults: a one-member cluster named
// "default" with data in ./default.meshetcd, clients on 127.0.0.1:2379 and
// the peer (mesh) URL 127.0.0.1:2380.
func NewConfig() Config {
	return Config{
		Name:                        DefaultName,
		ListenClientURLs:            []url.URL{mustURL(DefaultListenClientURL)},
		AdvertiseClientURLs:         []url.URL{mustURL(DefaultAdvertiseClientURL)},
		ListenPeerURLs:              []url.URL{mustURL(DefaultListenPeerURL)},
		AdvertisePeerURLs:           []url.URL{mustURL(DefaultInitialAdvertisePeerURL)},
		InitialClusterState:         ClusterStateNew,
		InitialClusterToken:         DefaultInitialClusterToken,
		StrictReconfigCheck:         true,
		JoinTimeout:                 DefaultJoinTimeout,
		DiscoveryTimeout:            DefaultJoinTimeout,
		SnapshotCount:               DefaultSnapshotCount,
		HeartbeatInterval:           DefaultHeartbeatInterval,
		ElectionTimeout:             DefaultElectionTimeout,
		MaxRequestBytes:             DefaultMaxRequestBytes,
		MaxTxnOps:                   DefaultMaxTxnOps,
		AutoCompactionMode:          DefaultAutoCompactionMode,
		AutoCompactionRetention:     DefaultAutoCompactionRetention,
		MaxConcurrentStreams:        math.MaxUint32,
		GRPCKeepAliveMinTime:        5 * time.Second,
		GRPCKeepAliveInterval:       2 * time.Hour,
		GRPCKeepAliveTimeout:        20 * time.Second,
		WarningUnaryRequestDuration: 300 * time.Millisecond,
		SelfSignedCertValidity:      1,
		TlsMinVersion:               DefaultTLSMinVersion,
		LogLevel:                    DefaultLogLevel,
		LogFormat:                   DefaultLogFormat,
		LogOutputs:                  []string{DefaultLogOutput},
		AuthToken:                   DefaultAuthToken,
		AuthTokenTTL:                DefaultAuthTokenTTL,
		BcryptCost:                  uint(bcrypt.DefaultCost),
	}
}

// mustURL parses one of the constant defaults above; they are known good.
func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(fmt.Sprintf("embed: bad built-in default URL %q: %v", s, err))
	}
	return *u
}

// EffectiveDataDir is DataDir, or "<Name>.meshetcd" when DataDir is empty.
func (c *Config) EffectiveDataDir() string {
	if c.DataDir != "" {
		return c.DataDir
	}
	return c.Name + ".meshetcd"
}

// InitialClusterMap parses InitialCluster; an empty InitialCluster means
// this member alone with its advertised peer URLs.
func (c *Config) InitialClusterMap() (types.URLsMap, error) {
	if strings.TrimSpace(c.InitialCluster) == "" {
		if len(c.AdvertisePeerURLs) == 0 {
			return nil, errors.New("--initial-advertise-peer-urls must not be empty")
		}
		return types.URLsMap{c.Name: types.URLs(c.AdvertisePeerURLs)}, nil
	}
	m, err := types.NewURLsMap(c.InitialCluster)
	if err != nil {
		return nil, fmt.Errorf("invalid --initial-cluster %q: %w", c.InitialCluster, err)
	}
	return m, nil
}

// Validate checks the configuration the way etcd's embed.Config.Validate
// does (same messages where etcd has one), plus what meshetcd cannot do yet.
// It does not touch the disk or the network.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("--name must not be empty")
	}
	if len(c.ListenClientURLs) == 0 {
		return errors.New("--listen-client-urls must not be empty")
	}
	if err := checkBindURLs("--listen-client-urls", c.ListenClientURLs, "http", "https"); err != nil {
		return err
	}
	if len(c.AdvertiseClientURLs) == 0 {
		return ErrUnsetAdvertiseClientURLs
	}
	if err := checkHostURLs(c.AdvertiseClientURLs); err != nil {
		return fmt.Errorf(`--advertise-client-urls %q must be in the format "host:port" (%w)`, urlsString(c.AdvertiseClientURLs), err)
	}
	if err := c.validateClientTLS(); err != nil {
		return err
	}
	if err := checkBindURLs("--listen-metrics-urls", c.ListenMetricsURLs, "http", "https"); err != nil {
		return err
	}
	if err := checkBindURLs("--listen-peer-urls", c.ListenPeerURLs, "http", "https"); err != nil {
		return err
	}
	if len(c.ListenPeerURLs) != 1 {
		return fmt.Errorf("--listen-peer-urls %q: the mesh listens on exactly one address; give one URL", urlsString(c.ListenPeerURLs))
	}
	if len(c.AdvertisePeerURLs) == 0 {
		return errors.New("--initial-advertise-peer-urls must not be empty")
	}
	if err := checkHostURLs(c.AdvertisePeerURLs); err != nil {
		return fmt.Errorf(`--initial-advertise-peer-urls %q must be "host:port" (%w)`, urlsString(c.AdvertisePeerURLs), err)
	}
	for _, u := range c.AdvertisePeerURLs {
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("--initial-advertise-peer-urls %q: URL scheme must be http or https", u.String())
		}
		// ("existing" with port 0 is checked at start: a restart ignores it.)
		if u.Port() == "0" && (c.DiscoverySize > 0 || c.Join || strings.Contains(c.InitialCluster, ",")) {
			return fmt.Errorf("--initial-advertise-peer-urls %q: the port must be fixed in a multi-member cluster (it is part of the member's identity in the mesh and in the member id)", u.String())
		}
	}
	if c.JoinTimeout < 0 {
		return fmt.Errorf("--join-timeout must be >= 0 (got %v)", c.JoinTimeout)
	}
	if c.DiscoveryTimeout < 0 {
		return fmt.Errorf("--discovery-timeout must be >= 0 (got %v)", c.DiscoveryTimeout)
	}
	if c.DiscoverySize < 0 {
		return fmt.Errorf("--discovery-size must be >= 0 (got %d)", c.DiscoverySize)
	}
	if c.DiscoverySize > 0 && c.Join {
		return errors.New("--discovery-size and --join exclude each other: discovery forms a new cluster (and joins a running one by itself), --join only joins")
	}
	if (c.DiscoverySize > 0 || c.Join) && strings.TrimSpace(c.InitialCluster) != "" {
		return errors.New("--initial-cluster cannot be combined with --discovery-size or --join: the membership comes from the mesh")
	}
	if c.Join && len(c.Peers) == 0 {
		return errors.New("--join needs --peers host:port naming a reachable member of the cluster")
	}
	for _, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("--peers %q: want host:port of a member's peer address (%w)", p, err)
		}
	}

	switch c.InitialClusterState {
	case ClusterStateNew, ClusterStateExisting:
	default:
		return fmt.Errorf("unexpected clusterState %q", c.InitialClusterState)
	}
	if c.InitialClusterToken == "" {
		return errors.New("--initial-cluster-token must not be empty")
	}
	ic, err := c.InitialClusterMap()
	if err != nil {
		return err
	}
	if err := checkInitialCluster(c.Name, ic, c.AdvertisePeerURLs); err != nil {
		return err
	}

	if c.HeartbeatInterval <= 0 {
		return fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", c.HeartbeatInterval.Milliseconds())
	}
	if c.ElectionTimeout <= 0 {
		return fmt.Errorf("--election-timeout must be >0 (set to %dms)", c.ElectionTimeout.Milliseconds())
	}
	if 5*c.HeartbeatInterval > c.ElectionTimeout {
		return fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", c.ElectionTimeout.Milliseconds(), c.HeartbeatInterval.Milliseconds())
	}
	if c.ElectionTimeout > maxElectionTimeout {
		return fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", c.ElectionTimeout.Milliseconds(), maxElectionTimeout.Milliseconds())
	}
	if c.MaxRequestBytes == 0 {
		return errors.New("--max-request-bytes must be >0")
	}
	if c.MaxTxnOps == 0 {
		return errors.New("--max-txn-ops must be >0")
	}
	if err := checkAutoCompaction(c.AutoCompactionMode, c.AutoCompactionRetention); err != nil {
		return err
	}
	if c.Logger == nil {
		if _, err := parseLogLevel(c.LogLevel); err != nil {
			return err
		}
		if c.LogFormat != "json" && c.LogFormat != "console" {
			return fmt.Errorf("unsupported log format %q (supported: json, console)", c.LogFormat)
		}
	}
	return nil
}

// validateClientTLS is etcd's TLS flag validation (embed.Config.Validate and
// configureClientListeners), with etcd's messages: known TLS versions, min
// not above max, no cipher suites with TLS 1.3 only, known cipher suites,
// and key and certificate files for every https:// client URL.
func (c *Config) validateClientTLS() error {
	minVersion, err := tlsutil.GetTLSVersion(c.TlsMinVersion)
	if err != nil {
		return err
	}
	maxVersion, err := tlsutil.GetTLSVersion(c.TlsMaxVersion)
	if err != nil {
		return err
	}
	// maxVersion == 0 means that Go selects the highest available version.
	if maxVersion != 0 && minVersion > maxVersion {
		return fmt.Errorf("min version (%s) is greater than max version (%s)", c.TlsMinVersion, c.TlsMaxVersion)
	}
	if minVersion == tls.VersionTLS13 && len(c.CipherSuites) > 0 {
		return errors.New("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	if _, err := tlsutil.GetCipherSuites(c.CipherSuites); err != nil {
		return err
	}
	if c.ClientAutoTLS && c.ClientTLSInfo.Empty() && c.SelfSignedCertValidity == 0 {
		return errors.New("--self-signed-cert-validity is invalid, it should be greater than 0")
	}
	for _, u := range c.ListenClientURLs {
		if u.Scheme == "https" && c.ClientTLSInfo.Empty() && !c.ClientAutoTLS {
			return fmt.Errorf("TLS key/cert (--cert-file, --key-file) must be provided for client url %s with HTTPS scheme", u.String())
		}
	}
	return nil
}

// clientTLS is the TLS configuration the https:// client listeners serve:
// ClientTLSInfo with the cipher suites and versions applied, or, with
// ClientAutoTLS and no files, a self-signed certificate generated (once,
// then reused) under dataDir/fixtures/client like etcd's. It reports false
// when no client URL is https://. The files are checked now, so a missing,
// unreadable or mismatched key or certificate fails the start with etcd's
// error instead of every handshake.
func (c *Config) clientTLS(lg *zap.Logger, dataDir string) (*transport.TLSInfo, bool, error) {
	secure := false
	for _, u := range c.ListenClientURLs {
		if u.Scheme == "https" {
			secure = true
		} else if !c.ClientTLSInfo.Empty() {
			lg.Warn("scheme is http or unix while key and cert files are present; ignoring key and cert files", zap.String("client-url", u.String()))
		} else if c.ClientTLSInfo.ClientCertAuth {
			lg.Warn("scheme is http or unix while --client-cert-auth is enabled; ignoring client cert auth for this URL", zap.String("client-url", u.String()))
		}
	}
	if !secure {
		return nil, false, nil
	}
	info := c.ClientTLSInfo
	if c.ClientAutoTLS {
		if !info.Empty() {
			lg.Warn("ignoring client auto TLS since certs given")
		} else {
			hosts := make([]string, 0, len(c.ListenClientURLs))
			for _, u := range c.ListenClientURLs {
				hosts = append(hosts, u.Host)
			}
			var err error
			if info, err = transport.SelfCert(lg, filepath.Join(dataDir, "fixtures", "client"), hosts, c.SelfSignedCertValidity); err != nil {
				return nil, false, fmt.Errorf("failed to get client self-signed certs: %w", err)
			}
		}
	}
	if err := c.applyTLSOptions(&info); err != nil {
		return nil, false, err
	}
	info.Logger = lg
	info.HandshakeFailure = func(conn *tls.Conn, err error) {
		logf := lg.Warn
		if errors.Is(err, io.EOF) {
			logf = lg.Debug // port scanners and probes; not worth a warning
		}
		fields := []zap.Field{zap.String("remote-addr", conn.RemoteAddr().String()), zap.String("server-name", conn.ConnectionState().ServerName)}
		if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
			ips := make([]string, len(certs[0].IPAddresses))
			for i, ip := range certs[0].IPAddresses {
				ips[i] = ip.String()
			}
			fields = append(fields, zap.Strings("ip-addresses", ips), zap.Strings("dns-names", certs[0].DNSNames))
		}
		logf("rejected connection on client endpoint", append(fields, zap.Error(err))...)
	}
	if _, err := info.ServerConfig(); err != nil {
		return nil, false, err
	}
	return &info, true, nil
}

// checkInitialCluster mirrors etcd's bootstrap check that this member's entry
// in --initial-cluster matches its advertised peer URLs.
func checkInitialCluster(name string, ic types.URLsMap, apurls []url.URL) error {
	mine, ok := ic[name]
	if !ok {
		return fmt.Errorf("couldn't find local name %q in the initial cluster configuration", name)
	}
	want := types.URLs(apurls)
	want.Sort()
	got := append(types.URLs(nil), mine...)
	got.Sort()
	if want.String() != got.String() {
		return fmt.Errorf("--initial-cluster has %s=%s but missing from --initial-advertise-peer-urls=%s", name, got.String(), want.String())
	}
	return nil
}

// checkBindURLs is etcd's rule (an IP or "localhost", no path), plus the
// schemes meshetcd serves there today.
func checkBindURLs(flag string, urls []url.URL, schemes ...string) error {
	for _, u := range urls {
		switch {
		case slices.Contains(schemes, u.Scheme):
		case u.Scheme == "unix" || u.Scheme == "unixs":
			return fmt.Errorf("%s %q: unix sockets are not supported yet; use http://", flag, u.String())
		default:
			return fmt.Errorf("%s %q: URL scheme must be one of %s", flag, u.String(), strings.Join(schemes, ", "))
		}
		if u.Path != "" {
			return fmt.Errorf("%s %q: URL must not contain a path", flag, u.String())
		}
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return fmt.Errorf("%s %q: %w", flag, u.String(), err)
		}
		if host == "localhost" {
			continue
		}
		if net.ParseIP(host) == nil {
			return fmt.Errorf("expected IP in URL for binding (%s)", u.String())
		}
	}
	return nil
}

func checkHostURLs(urls []url.URL) error {
	for _, u := range urls {
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return err
		}
		if host == "" {
			return fmt.Errorf("unexpected empty host (%s)", u.String())
		}
	}
	return nil
}

// checkAutoCompaction accepts what etcd accepts: periodic takes a duration
// or a bare integer number of hours, revision takes a non-negative integer.
func checkAutoCompaction(mode, retention string) error {
	switch mode {
	case CompactorModePeriodic, CompactorModeRevision:
	case "":
		return errors.New("undefined auto-compaction-mode")
	default:
		return fmt.Errorf("unknown auto-compaction-mode %q", mode)
	}
	if retention == "" {
		retention = "0"
	}
	if n, err := strconv.ParseInt(retention, 10, 64); err == nil {
		if n < 0 {
			return fmt.Errorf("invalid auto-compaction-retention %q: must not be negative", retention)
		}
		return nil
	}
	if mode == CompactorModeRevision {
		return fmt.Errorf("invalid auto-compaction-retention %q for mode revision: want a revision count", retention)
	}
	d, err := time.ParseDuration(retention)
	if err != nil {
		return fmt.Errorf("invalid auto-compaction-retention %q: %w", retention, err)
	}
	if d < 0 {
		return fmt.Errorf("invalid auto-compaction-retention %q: must not be negative", retention)
	}
	return nil
}

func parseLogLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug", "info", "warn", "error", "dpanic", "panic", "fatal":
		var l zapcore.Level
		if err := l.UnmarshalText([]byte(s)); err != nil {
			return 0, fmt.Errorf("invalid --log-level %q: %w", s, err)
		}
		return l, nil
	default:
		return 0, fmt.Errorf("invalid --log-level %q (supported: debug, info, warn, error, panic, fatal)", s)
	}
}

// NewLogger builds the zap logger etcd would build for these settings: its
// JSON encoder and field names, writing to stderr by default.
func NewLogger(level, format string, outputs []string) (*zap.Logger, error) {
	lvl, err := parseLogLevel(level)
	if err != nil {
		return nil, err
	}
	lcfg := logutil.DefaultZapLoggerConfig
	lcfg.Level = zap.NewAtomicLevelAt(lvl)
	switch format {
	case "", "json":
		lcfg.Encoding = "json"
	case "console":
		lcfg.Encoding = "console"
	default:
		return nil, fmt.Errorf("unsupported log format %q (supported: json, console)", format)
	}
	var paths []string
	for _, o := range outputs {
		switch o {
		case "", DefaultLogOutput, "stderr":
			paths = append(paths, "stderr")
		case "stdout":
			paths = append(paths, "stdout")
		default:
			if dir := filepath.Dir(o); dir != "." {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, fmt.Errorf("cannot create log output directory for %q: %w", o, err)
				}
			}
			paths = append(paths, o)
		}
	}
	if len(paths) == 0 {
		paths = []string{"stderr"}
	}
	lcfg.OutputPaths = dedupe(paths)
	lcfg.ErrorOutputPaths = lcfg.OutputPaths
	lg, err := lcfg.Build()
	if err != nil {
		return nil, fmt.Errorf("building logger: %w", err)
	}
	return lg, nil
}

func dedupe(ss []string) []string {
	seen := make(map[string]bool, len(ss))
	out := ss[:0:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func urlsString(us []url.URL) string {
	ss := make([]string, len(us))
	for i := range us {
		ss[i] = us[i].String()
	}
	return strings.Join(ss, ",")
}

// DefaultJoinTimeout is Config.JoinTimeout's default.
const DefaultJoinTimeout = 60 * time.Second

// ErrJoinTimeout: a joining member got no answer from the cluster within
// JoinTimeout. The error wrapping it names the reason of the last attempt.
var ErrJoinTimeout = errors.New("could not join the cluster")

// applyTLSOptions sets --cipher-suites, --tls-min-version and
// --tls-max-version on info. etcd applies them to the client and the peer
// listeners alike.
func (c *Config) applyTLSOptions(info *transport.TLSInfo) error {
	cs, err := tlsutil.GetCipherSuites(c.CipherSuites)
	if err != nil {
		return err
	}
	if len(cs) > 0 {
		info.CipherSuites = cs
	}
	if info.MinVersion, err = tlsutil.GetTLSVersion(c.TlsMinVersion); err != nil {
		return err
	}
	if info.MaxVersion, err = tlsutil.GetTLSVersion(c.TlsMaxVersion); err != nil {
		return err
	}
	return nil
}
