package raftnode

import (
	"io"

	"go.etcd.io/raft/v3/raftpb"
)

// Applier is the replicated state machine raftnode drives. kvstore
// implements it; raftnode never imports kvstore.
//
// All methods except LeadershipChanged are called from raftnode's single
// apply goroutine, one at a time, in log order, so the state machine needs no
// locking between them.
type Applier interface {
	// ApplySnapshot replaces the state machine with the one described by a
	// snapshot received from the leader. It is called only after the
	// snapshot is durable in the WAL and snap directory; the database it
	// describes was saved beforehand with Snapshotter().SaveDBFrom by the
	// transport. Returning an error stops the member.
	ApplySnapshot(snap *raftpb.Snapshot) error

	// ApplyEntries applies committed entries (never empty). After a restart
	// the first entries may already be reflected in the state machine; it
	// must skip them itself (etcd: entries at or below the consistent index).
	// Conf-change entries must be passed to Node.ApplyConfChange (or, when
	// rejected, a copy with NodeId 0). Returning an error stops the member.
	ApplyEntries(ents []*raftpb.Entry) error

	// SnapshotData makes everything applied so far durable in the state
	// machine's own storage (etcd: kv.Commit) and returns the opaque payload
	// stored in the raft snapshot at the applied index.
	SnapshotData() ([]byte, error)

	// DatabaseSnapshot returns a point-in-time copy of the state machine's
	// database for a follower that needs a snapshot, and its size.
	DatabaseSnapshot() (io.ReadCloser, int64, error)

	// LeadershipChanged is called from the Ready loop whenever raft's
	// SoftState changes: lead is the known leader (0 = none), isLeader says
	// whether this member leads, leaderChanged whether a new leader emerged.
	// It must not block: the Ready loop waits for it.
	LeadershipChanged(lead uint64, isLeader, leaderChanged bool)
}
