package raftnode

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

var _ Reporter = (*Node)(nil)

// ID is this member's raft id (etcd member id).
func (n *Node) ID() uint64 { return n.id }

// ClusterID is the cluster id recorded in the WAL metadata.
func (n *Node) ClusterID() uint64 { return n.clusterID }

// Propose proposes data as a normal entry. A nil error means raft accepted
// it, not that it will commit: callers wait for it to be applied.
func (n *Node) Propose(ctx context.Context, data []byte) error {
	return n.node.Propose(ctx, data)
}

// ProposeConfChange proposes a membership change (etcd uses v1 ConfChange
// with the member JSON as Context).
func (n *Node) ProposeConfChange(ctx context.Context, cc raftpb.ConfChangeI) error {
	return n.node.ProposeConfChange(ctx, cc)
}

// ApplyConfChange applies a committed conf change to raft and records the
// resulting ConfState for future snapshots. Call it from Applier.ApplyEntries
// for every committed conf-change entry (with NodeId 0 to reject one).
func (n *Node) ApplyConfChange(cc raftpb.ConfChangeI) *raftpb.ConfState {
	cs := n.node.ApplyConfChange(cc)
	if cs != nil {
		n.confMu.Lock()
		n.confState = cs
		n.confMu.Unlock()
	}
	return cs
}

// ConfState is the membership as last applied.
func (n *Node) ConfState() *raftpb.ConfState {
	n.confMu.Lock()
	defer n.confMu.Unlock()
	return n.confState
}

// Step hands a message received from another member to raft.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	if n.cfg.IsIDRemoved(m.GetFrom()) {
		return fmt.Errorf("raftnode: message from removed member %x", m.GetFrom())
	}
	return n.node.Step(ctx, m)
}

// ReportUnreachable tells raft that a message to id could not be delivered.
func (n *Node) ReportUnreachable(id uint64) { n.node.ReportUnreachable(id) }

// ReportSnapshot tells raft how sending a snapshot to id ended.
func (n *Node) ReportSnapshot(id uint64, failed bool) {
	status := raft.SnapshotFinish
	if failed {
		status = raft.SnapshotFailure
	}
	n.node.ReportSnapshot(id, status)
}

// TransferLeadership asks raft to hand leadership from lead to transferee.
func (n *Node) TransferLeadership(ctx context.Context, lead, transferee uint64) {
	n.node.TransferLeadership(ctx, lead, transferee)
}

// ReadIndex requests a read index; the answer arrives on ReadState with
// the same rctx.
func (n *Node) ReadIndex(ctx context.Context, rctx []byte) error {
	return n.node.ReadIndex(ctx, rctx)
}

// ReadState delivers the newest ReadState of each Ready (etcd's readStateC).
// One consumer (the linearizable read loop) must drain it.
func (n *Node) ReadState() <-chan raft.ReadState { return n.readStateC }

// Status is raft's full status (progress of followers only on the leader).
func (n *Node) Status() raft.Status { return n.node.Status() }

// Lead is the leader this member knows of, 0 when none.
func (n *Node) Lead() uint64 { return n.lead.Load() }

// IsLeader reports whether this member currently leads.
func (n *Node) IsLeader() bool { return n.lead.Load() == n.id }

// Term is the newest raft term this member has persisted.
func (n *Node) Term() uint64 { return n.term.Load() }

// CommittedIndex is the highest index known committed.
func (n *Node) CommittedIndex() uint64 { return n.committedIndex.Load() }

// AppliedIndex is the highest index handed to and applied by the Applier.
func (n *Node) AppliedIndex() uint64 { return n.appliedIndex.Load() }

// ApplyWait returns a channel closed once AppliedIndex reaches index.
func (n *Node) ApplyWait(index uint64) <-chan struct{} { return n.applyWait.Wait(index) }

// LeaderChangedNotify returns a channel closed at the next leader change.
func (n *Node) LeaderChangedNotify() <-chan struct{} { return n.leaderChanged.Receive() }

// IsActive reports whether the Ready loop ticked within the last three tick
// intervals; a stalled leader (slow disk) must confirm leadership before
// leader-only work such as revoking leases (etcd's isActive).
func (n *Node) IsActive() bool {
	n.tickMu.RLock()
	defer n.tickMu.RUnlock()
	return n.latestTick.Add(3 * n.cfg.TickInterval).After(time.Now())
}

// Snapshotter gives the transport access to the snap directory: a received
// MsgSnap's database is saved with SaveDBFrom before the message is stepped.
func (n *Node) Snapshotter() *snap.Snapshotter { return n.snapshotter }

// Config is the effective configuration after defaults.
func (n *Node) Config() Config { return n.cfg }

// AdvanceTicks fast-forwards the election clock by ticks, so a member that
// can only elect itself (one voter) does not sit out a full election
// timeout at start (etcd's adjustTicks).
func (n *Node) AdvanceTicks(ticks int) {
	for i := 0; i < ticks; i++ {
		n.tick()
	}
}
