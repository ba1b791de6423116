package mesh

import (
	"context"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
)

// Transport is how the router listens and dials. The default is TCP; tests
// use mesh/memnet, whose *Host has the same methods.
type Transport interface {
	Listen(address string) (net.Listener, error)
	Dial(ctx context.Context, address string) (net.Conn, error)
}

// TCPTransport is the default Transport: plain TCP with keepalive as a
// backstop to the router's own heartbeats.
type TCPTransport struct {
	// KeepAlive is the TCP keepalive period; 0 means 15 s.
	KeepAlive time.Duration
}

func (t TCPTransport) keepAlive() time.Duration {
	if t.KeepAlive > 0 {
		return t.KeepAlive
	}
	return 15 * time.Second
}

// Listen opens a TCP listener.
func (t TCPTransport) Listen(address string) (net.Listener, error) {
	return t.ListenContext(context.Background(), address)
}

// ListenContext opens a TCP listener; ctx bounds resolving the address.
func (t TCPTransport) ListenContext(ctx context.Context, address string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: t.keepAlive()}
	return lc.Listen(ctx, "tcp", address)
}

// Dial opens a TCP connection.
func (t TCPTransport) Dial(ctx context.Context, address string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: t.keepAlive()}
	return d.DialContext(ctx, "tcp", address)
}

// Clock tells the router the time. Versions of our topology record start at
// Clock.Now() in Unix milliseconds so they increase across restarts.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Router. Start from DefaultConfig; zero durations and
// sizes are replaced by their defaults in New.
type Config struct {
	// Name identifies this peer in the mesh; it must be unique among live
	// peers (meshetcd: host:port of the first sorted peer URL). Required.
	Name PeerName
	// NickName is a human-readable label shown in status (≤ 64 bytes).
	NickName string
	// ClusterLabel separates meshes: peers with different labels refuse each
	// other (ErrWrongCluster). It also salts the password KDF.
	ClusterLabel string

	// ListenAddr is where the router accepts mesh connections ("host:port";
	// port 0 picks one). Empty means do not listen (dial-only peer).
	ListenAddr string
	// AdvertiseAddrs are the addresses other peers should dial to reach us
	// (at most 8). Empty means the listener's own address.
	AdvertiseAddrs []string
	// Seeds are addresses dialled at start and retried forever.
	Seeds []string

	// Password is the shared mesh secret. It is stretched once with
	// Argon2id (salted with ClusterLabel) into the pre-shared key.
	Password string
	// PSK is a pre-shared 32-byte key used as-is instead of Password.
	PSK []byte
	// EphemeralEncryption encrypts every connection with fresh X25519 keys
	// and no pre-shared key (meshetcd's --peer-auto-tls). Like etcd's
	// self-signed auto TLS it is confidential against passive eavesdroppers
	// but NOT authenticated: anyone who can reach the port can join, and an
	// active man in the middle can read and alter traffic. Use it instead
	// of Password/PSK, never with them; all peers must use the same mode.
	EphemeralEncryption bool
	// TLS runs every connection inside mutual X.509 TLS (meshetcd's
	// --peer-cert-file and friends; see NewTLSConfig). The mesh framing
	// then runs in plaintext inside TLS, unless Password/PSK is also set:
	// then a peer needs both an accepted certificate AND the secret.
	// Excludes EphemeralEncryption and InsecurePlaintext.
	TLS *TLSConfig
	// InsecurePlaintext turns encryption off. It must be set explicitly when
	// there is no Password/PSK; both ends must agree.
	InsecurePlaintext bool
	// Argon2id cost for Password (defaults: time 1, 64 MiB, 2 threads).
	KDFTime      uint32
	KDFMemoryKiB uint32
	KDFThreads   uint8

	// HeartbeatInterval is how often each connection sends a ping (150 ms).
	HeartbeatInterval time.Duration
	// DeadTimeout closes a connection after this long without receiving a
	// frame, or without a pong to our pings (600 ms). Keep it ≥ 3 heartbeat
	// intervals and below Raft's election timeout.
	DeadTimeout time.Duration
	// HandshakeTimeout bounds preamble plus hello exchange (5 s).
	HandshakeTimeout time.Duration
	// DialTimeout bounds a TCP connect (5 s).
	DialTimeout time.Duration
	// WriteTimeout closes a connection whose flush does not finish in time
	// (5 s), so a peer that stopped reading cannot hold our writer.
	WriteTimeout time.Duration
	// GossipInterval is the anti-entropy period: each gossip channel (and the
	// topology) sends its complete state to one random neighbour (5 s).
	GossipInterval time.Duration
	// RouteDebounce coalesces route recalculations after topology changes
	// (10 ms). A lost local connection recalculates at once.
	RouteDebounce time.Duration
	// GCGrace is how long an unreachable peer's record is kept before it is
	// garbage collected into a tombstone (60 s).
	GCGrace time.Duration
	// TombstoneTTL is how long a tombstone blocks a stale copy of a collected
	// record from coming back (10 min).
	TombstoneTTL time.Duration

	// MaxPeers bounds the topology (1024 records).
	MaxPeers int
	// ConnLimit bounds our connections, counting handshakes in progress (64).
	// A received record may list at most MaxPeers connections.
	ConnLimit int
	// MaxPendingHandshakes caps concurrent inbound+outbound handshakes (16).
	MaxPendingHandshakes int
	// FullMeshThreshold: with at most this many known peers, connect to all
	// of them (16); above it, keep about Degree connections (8).
	FullMeshThreshold int
	Degree            int

	// MaxDatagramSize is the largest datagram payload (1 MiB).
	MaxDatagramSize int
	// DefaultTTL is the hop limit of each envelope (16).
	DefaultTTL uint8
	// Per-connection send queue lengths by class: control 1024, interactive 4096,
	// bulk 1024 frames; QueueBytes bounds their total payload (64 MiB).
	ControlQueueLen, InteractiveQueueLen, BulkQueueLen int
	QueueBytes                                         int
	// BulkRate limits bulk-class bytes per second per connection (512
	// MiB/s) so bulk traffic cannot take all of a member's CPU (every
	// hop seals and opens it). Interactive frames always go first; what
	// keeps them from waiting behind bulk bytes already in the socket
	// buffers is the bulk sender's delay-based window (meshconn), not
	// this rate. Measured on loopback (2 cores): at 512 MiB/s a snapshot
	// streams at ~500 MB/s direct and ~490 MB/s through a relay while a
	// Raft-sized round trip keeps a p99 of ~0.3 ms direct and ~0.8 ms
	// relayed, far inside a heartbeat; a ~390 MiB catch-up takes ~1.3 s.
	// Unlimited, the stream reached ~885 MB/s direct (p99 ~0.65 ms), at
	// the cost of a whole core on each side.
	BulkRate int
	// InboundQueueLen bounds each channel's delivery queue (4096).
	InboundQueueLen int

	// Accept throttling: global token bucket (20/s, burst 32) and per remote
	// IP (5/s, burst 16). Connections over the limit are closed unread.
	AcceptRate, AcceptBurst     float64
	PerIPAcceptRate, PerIPBurst float64
	BackoffMin, BackoffMax      time.Duration // 500 ms, 30 s
	StaleBackoffMax             time.Duration // 5 min, for addresses of collected peers
	BackoffResetAfter           time.Duration // 30 s of stable connection
	NameCollisionBackoff        time.Duration // 5 min
	AuthFailureBackoff          time.Duration // 30 s minimum after ErrAuth/ErrWrongCluster

	// Logger receives structured logs; nil means zap.NewNop().
	Logger *zap.Logger
	// Transport dials and listens; nil means TCPTransport{}.
	Transport Transport
	// Clock is the time source for record versions, status, connection
	// ages, accept throttling, dial backoff and garbage collection (socket
	// deadlines and heartbeat liveness use the runtime clock); nil means the
	// system clock.
	Clock Clock
	// RandSeed seeds backoff jitter and neighbour choice; 0 means random.
	RandSeed uint64
}

// DefaultConfig returns a Config with every default filled in. Name,
// ListenAddr, ClusterLabel, secrets and seeds are left for the caller.
func DefaultConfig() Config {
	return Config{
		KDFTime:              1,
		KDFMemoryKiB:         64 * 1024,
		KDFThreads:           2,
		HeartbeatInterval:    150 * time.Millisecond,
		DeadTimeout:          600 * time.Millisecond,
		HandshakeTimeout:     5 * time.Second,
		DialTimeout:          5 * time.Second,
		WriteTimeout:         5 * time.Second,
		GossipInterval:       5 * time.Second,
		RouteDebounce:        10 * time.Millisecond,
		GCGrace:              60 * time.Second,
		TombstoneTTL:         10 * time.Minute,
		MaxPeers:             1024,
		ConnLimit:            64,
		MaxPendingHandshakes: 16,
		FullMeshThreshold:    16,
		Degree:               8,
		MaxDatagramSize:      1 << 20,
		DefaultTTL:           16,
		ControlQueueLen:      1024,
		InteractiveQueueLen:  4096,
		BulkQueueLen:         1024,
		QueueBytes:           64 << 20,
		BulkRate:             512 << 20,
		InboundQueueLen:      4096,
		AcceptRate:           20,
		AcceptBurst:          32,
		PerIPAcceptRate:      5,
		PerIPBurst:           16,
		BackoffMin:           500 * time.Millisecond,
		BackoffMax:           30 * time.Second,
		StaleBackoffMax:      5 * time.Minute,
		BackoffResetAfter:    30 * time.Second,
		NameCollisionBackoff: 5 * time.Minute,
		AuthFailureBackoff:   30 * time.Second,
	}
}

// Limits that are part of the protocol, not configuration.
const (
	maxNameLen        = 64
	maxNickNameLen    = 64
	maxLabelLen       = 128
	maxAdvertiseAddrs = 8
	maxAddrLen        = 256
	// maxFrameSizeCap is the hard ceiling on any frame, whatever the config.
	maxFrameSizeCap = 16 << 20
)

// withDefaults returns cfg with zero fields defaulted, or an error for a
// value that cannot work.
func (cfg Config) withDefaults() (Config, error) {
	def := DefaultConfig()
	setDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setFloat := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	if cfg.KDFTime == 0 {
		cfg.KDFTime = def.KDFTime
	}
	if cfg.KDFMemoryKiB == 0 {
		cfg.KDFMemoryKiB = def.KDFMemoryKiB
	}
	if cfg.KDFThreads == 0 {
		cfg.KDFThreads = def.KDFThreads
	}
	setDur(&cfg.HeartbeatInterval, def.HeartbeatInterval)
	setDur(&cfg.DeadTimeout, def.DeadTimeout)
	setDur(&cfg.HandshakeTimeout, def.HandshakeTimeout)
	setDur(&cfg.DialTimeout, def.DialTimeout)
	setDur(&cfg.WriteTimeout, def.WriteTimeout)
	setDur(&cfg.GossipInterval, def.GossipInterval)
	setDur(&cfg.RouteDebounce, def.RouteDebounce)
	setDur(&cfg.GCGrace, def.GCGrace)
	setDur(&cfg.TombstoneTTL, def.TombstoneTTL)
	setInt(&cfg.MaxPeers, def.MaxPeers)
	setInt(&cfg.ConnLimit, def.ConnLimit)
	setInt(&cfg.MaxPendingHandshakes, def.MaxPendingHandshakes)
	setInt(&cfg.FullMeshThreshold, def.FullMeshThreshold)
	setInt(&cfg.Degree, def.Degree)
	setInt(&cfg.MaxDatagramSize, def.MaxDatagramSize)
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = def.DefaultTTL
	}
	setInt(&cfg.ControlQueueLen, def.ControlQueueLen)
	setInt(&cfg.InteractiveQueueLen, def.InteractiveQueueLen)
	setInt(&cfg.BulkQueueLen, def.BulkQueueLen)
	setInt(&cfg.QueueBytes, def.QueueBytes)
	setInt(&cfg.BulkRate, def.BulkRate)
	setInt(&cfg.InboundQueueLen, def.InboundQueueLen)
	setFloat(&cfg.AcceptRate, def.AcceptRate)
	setFloat(&cfg.AcceptBurst, def.AcceptBurst)
	setFloat(&cfg.PerIPAcceptRate, def.PerIPAcceptRate)
	setFloat(&cfg.PerIPBurst, def.PerIPBurst)
	setDur(&cfg.BackoffMin, def.BackoffMin)
	setDur(&cfg.BackoffMax, def.BackoffMax)
	setDur(&cfg.StaleBackoffMax, def.StaleBackoffMax)
	setDur(&cfg.BackoffResetAfter, def.BackoffResetAfter)
	setDur(&cfg.NameCollisionBackoff, def.NameCollisionBackoff)
	setDur(&cfg.AuthFailureBackoff, def.AuthFailureBackoff)
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Transport == nil {
		cfg.Transport = TCPTransport{}
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}

	if err := validateName(cfg.Name); err != nil {
		return cfg, err
	}
	if len(cfg.NickName) > maxNickNameLen {
		return cfg, fmt.Errorf("mesh: nickname longer than %d bytes", maxNickNameLen)
	}
	if len(cfg.ClusterLabel) > maxLabelLen {
		return cfg, fmt.Errorf("mesh: cluster label longer than %d bytes", maxLabelLen)
	}
	if len(cfg.AdvertiseAddrs) > maxAdvertiseAddrs {
		return cfg, fmt.Errorf("mesh: more than %d advertise addresses", maxAdvertiseAddrs)
	}
	for _, a := range cfg.AdvertiseAddrs {
		if a == "" || len(a) > maxAddrLen {
			return cfg, fmt.Errorf("mesh: bad advertise address %q", a)
		}
	}
	secrets := 0
	if cfg.Password != "" {
		secrets++
	}
	if cfg.PSK != nil {
		secrets++
		if len(cfg.PSK) != 32 {
			return cfg, fmt.Errorf("mesh: PSK must be 32 bytes, got %d", len(cfg.PSK))
		}
	}
	switch {
	case secrets > 1:
		return cfg, fmt.Errorf("mesh: set only one of Password and PSK")
	case secrets == 1 && cfg.InsecurePlaintext:
		return cfg, fmt.Errorf("mesh: InsecurePlaintext set together with a secret")
	case secrets == 1 && cfg.EphemeralEncryption:
		return cfg, fmt.Errorf("mesh: EphemeralEncryption set together with a secret")
	case cfg.TLS != nil && (cfg.TLS.Server == nil || cfg.TLS.Client == nil):
		return cfg, fmt.Errorf("mesh: TLS needs both a Server and a Client config")
	case cfg.TLS != nil && cfg.EphemeralEncryption:
		return cfg, fmt.Errorf("mesh: EphemeralEncryption set together with TLS")
	case cfg.TLS != nil && cfg.InsecurePlaintext:
		return cfg, fmt.Errorf("mesh: InsecurePlaintext set together with TLS")
	case cfg.EphemeralEncryption && cfg.InsecurePlaintext:
		return cfg, fmt.Errorf("mesh: EphemeralEncryption set together with InsecurePlaintext")
	case secrets == 0 && !cfg.InsecurePlaintext && !cfg.EphemeralEncryption && cfg.TLS == nil:
		return cfg, fmt.Errorf("mesh: no Password/PSK configured; set EphemeralEncryption (encrypted, unauthenticated) or InsecurePlaintext to run without one")
	}
	if cfg.DeadTimeout < 2*cfg.HeartbeatInterval {
		return cfg, fmt.Errorf("mesh: DeadTimeout %v must be at least 2 × HeartbeatInterval %v", cfg.DeadTimeout, cfg.HeartbeatInterval)
	}
	if cfg.MaxDatagramSize > maxFrameSizeCap-1024 {
		return cfg, fmt.Errorf("mesh: MaxDatagramSize %d above the %d frame cap", cfg.MaxDatagramSize, maxFrameSizeCap)
	}
	return cfg, nil
}

// validateName checks the PeerName rules: 1..64 bytes of printable ASCII,
// no spaces or '/'.
func validateName(n PeerName) error {
	if len(n) == 0 || len(n) > maxNameLen {
		return fmt.Errorf("mesh: peer name %q must be 1..%d bytes", string(n), maxNameLen)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("mesh: peer name %q has invalid byte %q", string(n), c)
		}
	}
	return nil
}
