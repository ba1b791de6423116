package kvstore

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3compactor"
	"go.etcd.io/etcd/server/v3/storage/datadir"
)

// Defaults, as etcd's embed.Config defaults.
const (
	DefaultName                = "default"
	DefaultInitialClusterToken = "etcd-cluster"
	DefaultPeerURL             = "http://localhost:2380"
	DefaultClientURL           = "http://localhost:2379"
	DefaultSnapshotCount       = 10000
	DefaultSnapshotCatchUp     = 5000
	DefaultHeartbeatInterval   = 100 * time.Millisecond
	DefaultElectionTimeout     = 1000 * time.Millisecond
	DefaultMaxRequestBytes     = 1.5 * 1024 * 1024
	DefaultMaxTxnOps           = 128
	DefaultAuthToken           = "simple"
	DefaultTokenTTL            = 300 * time.Second

	// raftMessageOverhead is what MaxSizePerMsg adds on top of the largest
	// request by default (the same slack gRPC gets in etcd).
	raftMessageOverhead = 512 * 1024

	// healthInterval is etcd's HealthInterval: a peer must have been
	// connected this long to count as active for strict reconfig checks.
	healthInterval = 5 * time.Second

	clusterStateNew      = "new"
	clusterStateExisting = "existing"
)

func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.DataDir == "" {
		return c, errors.New("kvstore: DataDir is required")
	}
	if c.InitialClusterToken == "" {
		c.InitialClusterToken = DefaultInitialClusterToken
	}
	if c.InitialClusterState == "" {
		c.InitialClusterState = clusterStateNew
	}
	if c.InitialClusterState != clusterStateNew && c.InitialClusterState != clusterStateExisting {
		return c, fmt.Errorf("kvstore: InitialClusterState %q must be %q or %q", c.InitialClusterState, clusterStateNew, clusterStateExisting)
	}
	if len(c.PeerURLs) == 0 {
		u, err := types.NewURLs([]string{DefaultPeerURL})
		if err != nil {
			return c, fmt.Errorf("kvstore: default peer URL: %w", err)
		}
		c.PeerURLs = u
	}
	if len(c.ClientURLs) == 0 {
		u, err := types.NewURLs([]string{DefaultClientURL})
		if err != nil {
			return c, fmt.Errorf("kvstore: default client URL: %w", err)
		}
		c.ClientURLs = u
	}
	if len(c.InitialCluster) == 0 {
		c.InitialCluster = types.URLsMap{c.Name: c.PeerURLs}
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = DefaultSnapshotCatchUp
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.HeartbeatInterval < 0 || c.ElectionTimeout < 0 {
		return c, errors.New("kvstore: HeartbeatInterval and ElectionTimeout must be positive")
	}
	// etcd: election timeout must be at least 5x the heartbeat interval.
	if 5*c.HeartbeatInterval > c.ElectionTimeout {
		return c, fmt.Errorf("kvstore: ElectionTimeout %v must be at least 5 times HeartbeatInterval %v", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = uint64(c.MaxRequestBytes) + raftMessageOverhead
	}
	if c.MaxSizePerMsg <= uint64(c.MaxRequestBytes) {
		return c, fmt.Errorf("kvstore: MaxSizePerMsg %d must exceed MaxRequestBytes %d so any request fits one raft message", c.MaxSizePerMsg, c.MaxRequestBytes)
	}
	if c.MaxLearners == 0 {
		c.MaxLearners = membership.DefaultMaxLearners
	}
	if c.MaxLearners < 0 {
		return c, fmt.Errorf("kvstore: MaxLearners %d must not be negative", c.MaxLearners)
	}
	if c.AuthToken == "" {
		c.AuthToken = DefaultAuthToken
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	// A cost outside bcrypt's range is left to etcd's auth.NewAuthStore,
	// which logs it and uses the default, as etcd does.
	if c.BcryptCost == 0 {
		c.BcryptCost = bcrypt.DefaultCost
	}
	if c.healthInterval == 0 {
		c.healthInterval = healthInterval
	}
	if c.Peers != nil && c.Transport != nil {
		return c, errors.New("kvstore: set either Peers or Transport, not both")
	}
	if c.Join && c.Peers == nil {
		return c, errors.New("kvstore: Join needs Peers (the join request travels to the other members)")
	}
	if _, err := c.autoCompactionRetention(); err != nil {
		return c, err
	}
	return c, nil
}

// electionTicks is etcd's ElectionTicks: election timeout in heartbeats.
func (c Config) electionTicks() int {
	return int(c.ElectionTimeout / c.HeartbeatInterval)
}

// requestTimeout is etcd's ReqTimeout: 5s for queueing, computation and
// disk, plus two election timeouts for a possible leader election.
func (c Config) requestTimeout() time.Duration {
	return 5*time.Second + 2*time.Duration(c.electionTicks())*c.HeartbeatInterval
}

// minLeaseTTL is etcd's minimum lease TTL in seconds: a lease must outlive
// an election, ceil(1.5 x election timeout).
func (c Config) minLeaseTTL() int64 {
	minTTL := time.Duration((3*c.electionTicks())/2) * c.HeartbeatInterval
	return int64(math.Ceil(minTTL.Seconds()))
}

// autoCompactionRetention parses the retention like etcd's
// parseCompactionRetention; 0 means auto-compaction is off.
func (c Config) autoCompactionRetention() (time.Duration, error) {
	if c.AutoCompactionRetention == "" || c.AutoCompactionRetention == "0" {
		return 0, nil
	}
	if h, err := strconv.Atoi(c.AutoCompactionRetention); err == nil && h >= 0 {
		switch c.AutoCompactionMode {
		case v3compactor.ModeRevision:
			return time.Duration(int64(h)), nil
		case v3compactor.ModePeriodic:
			return time.Duration(int64(h)) * time.Hour, nil
		default:
			return 0, fmt.Errorf("kvstore: AutoCompactionMode %q must be %q or %q", c.AutoCompactionMode, v3compactor.ModePeriodic, v3compactor.ModeRevision)
		}
	}
	if c.AutoCompactionMode != v3compactor.ModePeriodic && c.AutoCompactionMode != "" {
		return 0, fmt.Errorf("kvstore: AutoCompactionRetention %q is a duration; only %q mode takes one", c.AutoCompactionRetention, v3compactor.ModePeriodic)
	}
	d, err := time.ParseDuration(c.AutoCompactionRetention)
	if err != nil {
		return 0, fmt.Errorf("kvstore: parse AutoCompactionRetention %q: %w", c.AutoCompactionRetention, err)
	}
	return d, nil
}

// EffectiveMaxSizePerMsg is the raft MaxSizePerMsg a member with this
// config uses (defaults applied): any raft message, the largest request
// included, stays within it. embed sizes the member's mesh datagrams from
// it (peer.MaxDatagramSize).
func (c Config) EffectiveMaxSizePerMsg() uint64 {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = uint64(c.MaxRequestBytes) + raftMessageOverhead
	}
	return c.MaxSizePerMsg
}

func (c Config) memberDir() string   { return datadir.ToMemberDir(c.DataDir) }
func (c Config) walDir() string      { return datadir.ToWALDir(c.DataDir) }
func (c Config) snapDir() string     { return datadir.ToSnapDir(c.DataDir) }
func (c Config) backendPath() string { return datadir.ToBackendFileName(c.DataDir) }
func (c Config) lockPath() string    { return filepath.Join(c.DataDir, "meshetcd.lock") }
