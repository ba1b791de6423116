package raftnode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	serverstorage "go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Bootstrap describes a member whose WAL directory does not exist yet.
type Bootstrap struct {
	NodeID    uint64
	ClusterID uint64
	// Peers are the initial voters of a brand-new cluster; etcd gives each
	// the member's JSON as Context so the resulting conf-change entries carry
	// the membership. Empty means "join an existing cluster": the node starts
	// with an empty log and receives everything from the leader.
	Peers []raft.Peer
}

// Recovery is what a restarting member's state machine knows about itself.
type Recovery struct {
	// ConfState is the membership as the state machine last applied it
	// (etcd builds it from the backend's members bucket). It overrides the
	// WAL snapshot record's ConfState: conf-change entries the state machine
	// already applied are skipped on replay, so without it raft would start
	// with no voters and never elect a leader (etcd's bootstrap does the same).
	ConfState *raftpb.ConfState
	// AppliedIndex is the state machine's durable applied index (etcd's
	// consistent index). It must not be older than the newest snapshot.
	AppliedIndex uint64
}

// WALExists reports whether dir holds a WAL, i.e. whether the member must
// Restart rather than Create.
func WALExists(dir string) bool { return wal.Exist(dir) }

// Create makes a new WAL (tagged with the member and cluster ids, like etcd)
// and a raft node for a member that has never run. The node is idle until
// Start.
func Create(cfg Config, b Bootstrap) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if b.NodeID == 0 {
		return nil, errors.New("raftnode: bootstrap NodeID must be non-zero")
	}
	lg := cfg.Logger
	if WALExists(cfg.WALDir) {
		return nil, fmt.Errorf("raftnode: WAL directory %s already exists; restart instead of create", cfg.WALDir)
	}
	ss, err := newSnapshotter(lg, cfg.SnapDir)
	if err != nil {
		return nil, err
	}
	metadata, err := proto.Marshal(&pb.Metadata{NodeID: new(b.NodeID), ClusterID: new(b.ClusterID)})
	if err != nil {
		return nil, fmt.Errorf("raftnode: encode WAL metadata: %w", err)
	}
	w, err := wal.Create(lg, cfg.WALDir, metadata)
	if err != nil {
		return nil, fmt.Errorf("raftnode: create WAL in %s: %w", cfg.WALDir, err)
	}
	if cfg.UnsafeNoFsync {
		w.SetUnsafeNoFsync()
	}
	ms := raft.NewMemoryStorage()
	rn, err := startRaft(cfg, b.NodeID, ms, b.Peers)
	if err != nil {
		w.Close()
		return nil, err
	}
	lg.Info("created new member",
		zap.String("member-id", fmt.Sprintf("%x", b.NodeID)),
		zap.String("cluster-id", fmt.Sprintf("%x", b.ClusterID)),
		zap.Int("initial-peers", len(b.Peers)))
	return newNode(cfg, b.NodeID, b.ClusterID, rn, ms, serverstorage.NewStorage(lg, w, ss), ss, &raftpb.ConfState{}, 0, 0), nil
}

// Restart replays the WAL (repairing a torn tail once) and the newest
// snapshot record, and returns an idle raft node for the member recorded in
// the WAL metadata. Any corruption other than a torn tail is returned as an
// error; nothing on disk is modified in that case.
func Restart(cfg Config, r Recovery) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if r.ConfState == nil {
		return nil, errors.New("raftnode: restart needs the state machine's ConfState")
	}
	lg := cfg.Logger
	ss, err := newSnapshotter(lg, cfg.SnapDir)
	if err != nil {
		return nil, err
	}
	walSnaps, err := wal.ValidSnapshotEntries(lg, cfg.WALDir)
	if err != nil {
		return nil, fmt.Errorf("raftnode: WAL %s is corrupt: read snapshot records: %w", cfg.WALDir, err)
	}
	snapshot := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(0)), Term: new(uint64(0))}}
	if len(walSnaps) > 0 {
		last := walSnaps[len(walSnaps)-1]
		snapshot.Metadata.Index = new(last.GetIndex())
		snapshot.Metadata.Term = new(last.GetTerm())
	}
	snapIndex := snapshot.Metadata.GetIndex()
	if r.AppliedIndex < snapIndex {
		// The state machine must install <index>.snap.db first (a leader
		// snapshot that was durable but not yet swapped in); kvstore does
		// so using NewestSnapshotIndex before calling Restart.
		return nil, fmt.Errorf("raftnode: state machine applied index %d is older than snapshot %d; install the snapshot database first", r.AppliedIndex, snapIndex)
	}
	snapshot.Metadata.ConfState = proto.Clone(r.ConfState).(*raftpb.ConfState)

	w, metadata, hs, ents, repairedSegment, err := openWAL(cfg, &walpb.Snapshot{Index: new(snapIndex), Term: new(snapshot.Metadata.GetTerm())})
	if err != nil {
		return nil, err
	}
	lastIndex := snapIndex
	if len(ents) > 0 {
		lastIndex = ents[len(ents)-1].GetIndex()
	}
	if repairedSegment != "" && lastIndex < r.AppliedIndex {
		// A torn tail only ever holds records that were never fsynced, so
		// never applied. Losing applied entries means the "tail" was
		// garbage in the middle of the log: undo the repair and refuse.
		w.Close()
		if rerr := os.Rename(repairedSegment+".broken", repairedSegment); rerr != nil {
			lg.Error("failed to restore WAL segment after a refused repair", zap.String("segment", repairedSegment), zap.Error(rerr))
		}
		return nil, fmt.Errorf("raftnode: WAL %s is corrupt: truncating it would drop entries %d..%d the state machine already applied", cfg.WALDir, lastIndex+1, r.AppliedIndex)
	}
	var md pb.Metadata
	if err := proto.Unmarshal(metadata, &md); err != nil {
		w.Close()
		return nil, fmt.Errorf("raftnode: decode WAL metadata: %w", err)
	}
	if md.GetNodeID() == 0 {
		w.Close()
		return nil, fmt.Errorf("raftnode: WAL %s records no member id", cfg.WALDir)
	}

	ms := raft.NewMemoryStorage()
	if err := ms.ApplySnapshot(snapshot); err != nil {
		w.Close()
		return nil, fmt.Errorf("raftnode: load snapshot %d: %w", snapIndex, err)
	}
	if hs != nil {
		if err := ms.SetHardState(hs); err != nil {
			w.Close()
			return nil, fmt.Errorf("raftnode: load hard state: %w", err)
		}
	}
	if err := ms.Append(ents); err != nil {
		w.Close()
		return nil, fmt.Errorf("raftnode: load %d WAL entries: %w", len(ents), err)
	}
	rn, err := startRaft(cfg, md.GetNodeID(), ms, nil)
	if err != nil {
		w.Close()
		return nil, err
	}
	lg.Info("restarted member",
		zap.String("member-id", fmt.Sprintf("%x", md.GetNodeID())),
		zap.String("cluster-id", fmt.Sprintf("%x", md.GetClusterID())),
		zap.Uint64("snapshot-index", snapIndex),
		zap.Uint64("commit-index", hs.GetCommit()),
		zap.Int("wal-entries", len(ents)),
		zap.Stringer("conf-state", snapshot.Metadata.ConfState))
	return newNode(cfg, md.GetNodeID(), md.GetClusterID(), rn, ms, serverstorage.NewStorage(lg, w, ss), ss,
		snapshot.Metadata.ConfState, snapIndex, snapshot.Metadata.GetTerm()), nil
}

// openWAL opens the WAL after snap and reads it, repairing a torn tail
// (io.ErrUnexpectedEOF: the last record was cut by a crash) at most once.
// repairedSegment names the truncated segment (its original is kept as
// <segment>.broken) when a repair happened.
func openWAL(cfg Config, snapAt *walpb.Snapshot) (w *wal.WAL, metadata []byte, hs *raftpb.HardState, ents []*raftpb.Entry, repairedSegment string, err error) {
	lg := cfg.Logger
	for {
		w, err := wal.Open(lg, cfg.WALDir, snapAt)
		if err != nil {
			return nil, nil, nil, nil, "", fmt.Errorf("raftnode: WAL %s is corrupt: open: %w", cfg.WALDir, err)
		}
		if cfg.UnsafeNoFsync {
			w.SetUnsafeNoFsync()
		}
		metadata, hs, ents, err := readAllNoPanic(w)
		if err == nil {
			return w, metadata, hs, ents, repairedSegment, nil
		}
		w.Close()
		if repairedSegment != "" || !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, nil, nil, "", fmt.Errorf("raftnode: WAL %s is corrupt and cannot be repaired: %w", cfg.WALDir, err)
		}
		last, lerr := lastSegment(cfg.WALDir)
		if lerr != nil {
			return nil, nil, nil, nil, "", lerr
		}
		if !wal.Repair(lg, cfg.WALDir) {
			return nil, nil, nil, nil, "", fmt.Errorf("raftnode: WAL %s is corrupt: repairing its tail failed: %w", cfg.WALDir, err)
		}
		lg.Warn("repaired torn WAL tail; the unacknowledged last record was dropped",
			zap.String("segment", last), zap.String("original-kept-as", last+".broken"), zap.Error(err))
		repairedSegment = last
	}
}

// lastSegment is the WAL segment wal.Repair works on.
func lastSegment(dir string) (string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(names) == 0 {
		return "", fmt.Errorf("raftnode: no WAL segments in %s: %v", dir, err)
	}
	sort.Strings(names)
	return names[len(names)-1], nil
}

// readAllNoPanic turns a decoder panic on garbage into an error: a corrupt
// file must produce a clear error from Restart, not crash the process.
func readAllNoPanic(w *wal.WAL) (metadata []byte, hs *raftpb.HardState, ents []*raftpb.Entry, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decode WAL: %v", p)
		}
	}()
	return w.ReadAll()
}

// startRaft builds the raft node with etcd's settings, turning raft's
// panics on inconsistent storage into errors.
func startRaft(cfg Config, id uint64, ms *raft.MemoryStorage, peers []raft.Peer) (n raft.Node, err error) {
	rc := &raft.Config{
		ID:                        id,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   ms,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedEntriesSize,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    newRaftLogger(cfg.Logger.Named("raft")),
	}
	defer func() {
		if p := recover(); p != nil {
			n, err = nil, fmt.Errorf("raftnode: raft refused the persisted state: %v", p)
		}
	}()
	if len(peers) == 0 {
		return raft.RestartNode(rc), nil
	}
	return raft.StartNode(rc, peers), nil
}

func newSnapshotter(lg *zap.Logger, dir string) (*snap.Snapshotter, error) {
	if err := fileutil.TouchDirAll(lg, dir); err != nil {
		return nil, fmt.Errorf("raftnode: create snapshot directory %s: %w", dir, err)
	}
	return snap.New(lg, dir), nil
}

// NewestSnapshotIndex is the index of the newest snapshot recorded in the
// WAL (0 when none). A restarting state machine older than it must first
// install that snapshot's database (etcd: RecoverSnapshotBackend).
func NewestSnapshotIndex(lg *zap.Logger, walDir string) (uint64, error) {
	walSnaps, err := wal.ValidSnapshotEntries(lg, walDir)
	if err != nil {
		return 0, fmt.Errorf("raftnode: WAL %s is corrupt: read snapshot records: %w", walDir, err)
	}
	if len(walSnaps) == 0 {
		return 0, nil
	}
	return walSnaps[len(walSnaps)-1].GetIndex(), nil
}
