package raftnode

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Defaults match etcd's (server/etcdserver/server.go, raft.go) except
// MaxSizePerMsg, which must stay below the mesh datagram limit.
const (
	DefaultTickInterval           = 100 * time.Millisecond
	DefaultElectionTicks          = 10
	DefaultSnapshotCount          = 10000
	DefaultSnapshotCatchUpEntries = 5000
	DefaultMaxSizePerMsg          = 1024 * 1024
	DefaultMaxInflightMsgs        = 512
	// DefaultMaxUncommittedEntriesSize bounds what a leader accepts before
	// commit; etcd leaves it unlimited, we cap it so an overloaded leader
	// rejects proposals (ErrProposalDropped) instead of growing without bound.
	DefaultMaxUncommittedEntriesSize = 1 << 30
)

// Config configures one raft member. DataDir-relative paths are the caller's
// business; raftnode only knows the two directories it owns.
type Config struct {
	Logger  *zap.Logger // nil means zap.NewNop()
	WALDir  string      // etcd layout: <data>/member/wal
	SnapDir string      // etcd layout: <data>/member/snap

	TickInterval  time.Duration // one raft tick (etcd --heartbeat-interval)
	ElectionTicks int           // etcd --election-timeout / --heartbeat-interval

	// SnapshotCount is how many applied entries trigger a raft snapshot and
	// log compaction; SnapshotCatchUpEntries entries stay in memory after
	// compaction so slow followers can catch up without a snapshot.
	SnapshotCount          uint64
	SnapshotCatchUpEntries uint64

	MaxSizePerMsg             uint64
	MaxInflightMsgs           int
	MaxUncommittedEntriesSize uint64
	UnsafeNoFsync             bool

	// Transport carries messages to other members; nil for a one-member
	// cluster. See Transport for the non-blocking contract.
	Transport Transport
	// IsIDRemoved reports members removed from the cluster, whose messages
	// are dropped instead of sent (etcd: cluster.IsIDRemoved). Optional.
	IsIDRemoved func(id uint64) bool
	// HeartbeatSendLate is called when the leader sends a heartbeat to a
	// member more than two heartbeat intervals after the previous one (a
	// starved Ready loop, usually a slow disk): etcd's
	// etcd_server_heartbeat_send_failures_total. Optional.
	HeartbeatSendLate func()
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = DefaultSnapshotCatchUpEntries
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	if c.MaxUncommittedEntriesSize == 0 {
		c.MaxUncommittedEntriesSize = DefaultMaxUncommittedEntriesSize
	}
	if c.IsIDRemoved == nil {
		c.IsIDRemoved = func(uint64) bool { return false }
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.WALDir == "":
		return errors.New("raftnode: WALDir is required")
	case c.SnapDir == "":
		return errors.New("raftnode: SnapDir is required")
	case c.TickInterval < 0:
		return fmt.Errorf("raftnode: TickInterval %v must be positive", c.TickInterval)
	case c.ElectionTicks < 2:
		// raft needs ElectionTick > HeartbeatTick (1).
		return fmt.Errorf("raftnode: ElectionTicks %d must be at least 2", c.ElectionTicks)
	case c.MaxInflightMsgs < 0:
		return fmt.Errorf("raftnode: MaxInflightMsgs %d must be positive", c.MaxInflightMsgs)
	}
	if sc, ok := c.Transport.(messageSizeChecker); ok {
		if need := RequiredMessageSize(c.MaxSizePerMsg); sc.MaxMessageSize() < need {
			return fmt.Errorf("raftnode: the transport carries messages up to %d bytes but MaxSizePerMsg %d needs %d: raise the mesh MaxDatagramSize (peer.MaxDatagramSize)",
				sc.MaxMessageSize(), c.MaxSizePerMsg, need)
		}
	}
	return nil
}

// ElectionTimeout is the wall-clock election timeout this config implies.
func (c Config) ElectionTimeout() time.Duration {
	c = c.withDefaults()
	return time.Duration(c.ElectionTicks) * c.TickInterval
}
