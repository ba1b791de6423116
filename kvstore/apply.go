package kvstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/etcdserver/api"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3alarm"
	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/raftnode"
)

// applier is the raftnode.Applier view of a Server; it keeps the apply
// methods off Server's public API.
type applier struct{ s *Server }

var _ raftnode.Applier = applier{}

func (a applier) ApplyEntries(ents []*raftpb.Entry) error { return a.s.applyEntries(ents) }
func (a applier) ApplySnapshot(snap *raftpb.Snapshot) error {
	return a.s.applySnapshot(snap)
}
func (a applier) LeadershipChanged(lead uint64, isLeader, leaderChanged bool) {
	a.s.leadershipChanged(isLeader, leaderChanged)
}

// SnapshotData commits bbolt so its consistent index is at least the
// snapshot index. etcd stores a v2 membership copy as the payload for old
// readers; 3.7 ignores it, and so do we.
func (a applier) SnapshotData() ([]byte, error) {
	a.s.KV().Commit()
	return nil, nil
}

func (a applier) DatabaseSnapshot() (io.ReadCloser, int64, error) {
	snap := a.s.Backend().Snapshot()
	size := snap.Size() // before the writer may close it
	pr, pw := io.Pipe()
	started := a.s.goAttach(func() {
		// A reader that never drains must not hold up Stop: closing the
		// read side unblocks the write below.
		written := make(chan struct{})
		defer close(written)
		go func() {
			select {
			case <-a.s.stopping:
				pr.CloseWithError(servererrors.ErrStopped)
			case <-written:
			}
		}()
		_, err := snap.WriteTo(pw)
		if cerr := snap.Close(); err == nil {
			err = cerr
		}
		pw.CloseWithError(err)
	})
	if !started {
		// goAttach refused: stopping. Give the pipe a clear end.
		snap.Close()
		pw.CloseWithError(servererrors.ErrStopped)
	}
	return pr, size, nil
}

// applyEntries applies committed entries in order. Its name matters: under
// ETCD_VERIFY=all|lock the backend checks that writes come from a function
// named applyEntries.
func (s *Server) applyEntries(ents []*raftpb.Entry) error {
	for _, e := range ents {
		shouldApplyV3 := membership.ApplyV2storeOnly
		if e.GetIndex() > s.ci.ConsistentIndex() {
			shouldApplyV3 = membership.ApplyBoth
			s.ci.SetConsistentApplyingIndex(e.GetIndex(), e.GetTerm())
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			s.applyEntryNormal(e, shouldApplyV3)
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.Data, &cc); err != nil {
				return fmt.Errorf("decode conf change at index %d: %w", e.GetIndex(), err)
			}
			err := s.applyConfChange(&cc, shouldApplyV3)
			s.membershipVersion.Add(1)
			s.w.Trigger(cc.GetId(), &confChangeResponse{members: s.cluster.Members(), err: err})
		default:
			// etcd only ever proposes v1 conf changes; anything else is a
			// log we did not write.
			return fmt.Errorf("unsupported raft entry type %s at index %d", e.GetType(), e.GetIndex())
		}
		if shouldApplyV3 {
			s.pruneDedupe(e.GetIndex())
		}
		s.appliedIndex.Store(e.GetIndex())
		s.appliedTerm.Store(e.GetTerm())
	}
	return nil
}

func (s *Server) applyEntryNormal(e *raftpb.Entry, shouldApplyV3 membership.ShouldApplyV3) {
	if shouldApplyV3 {
		defer func() {
			// No backend write happened (no-op entry, failed compare,
			// error): move the consistent index explicitly.
			if s.ci.ConsistentIndex() < e.GetIndex() {
				s.ci.SetConsistentIndex(e.GetIndex(), e.GetTerm())
			}
		}()
	}
	// An empty entry is a new leader's no-op: everything from earlier terms
	// is now applied.
	if len(e.Data) == 0 {
		s.firstCommitInTerm.Notify()
		if s.isLeader() {
			s.lessor.Promote(s.cfg.ElectionTimeout)
		}
		return
	}
	if bool(shouldApplyV3) && s.isDuplicate(e.Data, e.GetIndex()) {
		return
	}
	ar, id := apply.Apply(s.lg, e, s.uberApply, s.w, shouldApplyV3)
	if !s.storageVersionCurrent.Load() {
		// Until the cluster version is set and stamped, any entry may be
		// the one that sets it.
		s.clusterVersionChanged.Notify()
	}
	if !shouldApplyV3 || ar == nil {
		return
	}
	if !errors.Is(ar.Err, servererrors.ErrNoSpace) || len(s.alarmStore.Get(pb.AlarmType_NOSPACE)) > 0 {
		s.w.Trigger(id, ar)
		return
	}
	s.lg.Warn("message exceeded backend quota; raising alarm",
		zap.Int64("quota-size-bytes", s.cfg.QuotaBackendBytes), zap.Error(ar.Err))
	s.goAttach(func() {
		a := &pb.AlarmRequest{MemberID: uint64(s.memberID), Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE}
		if _, err := s.raftRequest(s.ctx, &pb.InternalRaftRequest{Alarm: a}); err != nil {
			s.lg.Warn("failed to raise NOSPACE alarm", zap.Error(err))
		}
		s.w.Trigger(id, ar)
	})
}

// confChangeResponse is what a conf-change proposer's waiter receives.
type confChangeResponse struct {
	members []*membership.Member
	err     error
}

// applyConfChange is etcd's: validate against the committed membership,
// apply to raft (NodeId 0 when rejected), persist the ConfState with the
// next backend commit, and update the membership.
func (s *Server) applyConfChange(cc *raftpb.ConfChange, shouldApplyV3 membership.ShouldApplyV3) error {
	lg := s.lg
	err := s.cluster.ValidateConfigurationChange(cc, shouldApplyV3)
	if err == nil && removesLastVoter(s.cluster, cc) {
		// raft panics on a configuration without voters; every member
		// rejects it the same way, from the same committed membership.
		err = servererrors.ErrNotEnoughStartedMembers
	}
	if err != nil {
		lg.Error("validation on configuration change failed", zap.Bool("should-apply-v3", bool(shouldApplyV3)), zap.Error(err))
		cc.NodeId = new(raft.None)
		s.r.ApplyConfChange(cc)
		if shouldApplyV3 {
			idx, term := s.ci.ConsistentApplyingIndex()
			s.ci.SetConsistentIndex(idx, term)
		}
		return err
	}
	// Replayed conf changes (below the consistent index) are already in the
	// ConfState raft restarted with.
	cs := s.r.ConfState()
	if shouldApplyV3 {
		cs = s.r.ApplyConfChange(cc)
	}
	s.beHooks.SetConfState(cs)
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		var ccc membership.ConfigChangeContext
		if err := json.Unmarshal(cc.Context, &ccc); err != nil {
			return fmt.Errorf("decode member in conf change: %w", err)
		}
		if cc.GetNodeId() != uint64(ccc.Member.ID) {
			return fmt.Errorf("conf change for node %s carries member %s", types.ID(cc.GetNodeId()), ccc.Member.ID)
		}
		if ccc.IsPromote {
			s.cluster.PromoteMember(ccc.Member.ID, shouldApplyV3)
		} else {
			s.cluster.AddMember(&ccc.Member, shouldApplyV3)
		}
	case raftpb.ConfChangeRemoveNode:
		id := types.ID(cc.GetNodeId())
		s.cluster.RemoveMember(id, shouldApplyV3)
		if id == s.memberID && shouldApplyV3 {
			go s.stopAfterRemoval() // ends with Stop, which it may call
		}
	case raftpb.ConfChangeUpdateNode:
		var m membership.Member
		if err := json.Unmarshal(cc.Context, &m); err != nil {
			return fmt.Errorf("decode member in conf change: %w", err)
		}
		if cc.GetNodeId() != uint64(m.ID) {
			return fmt.Errorf("conf change for node %s carries member %s", types.ID(cc.GetNodeId()), m.ID)
		}
		s.cluster.UpdateRaftAttributes(m.ID, m.RaftAttributes, shouldApplyV3)
	}
	if shouldApplyV3 {
		// Membership writes normally move the index through the post-lock
		// hook; make sure it moves even when nothing was written.
		if idx, term := s.ci.ConsistentApplyingIndex(); s.ci.ConsistentIndex() < idx {
			s.ci.SetConsistentIndex(idx, term)
		}
	}
	return nil
}

func removesLastVoter(cl *membership.RaftCluster, cc *raftpb.ConfChange) bool {
	if cc.GetType() != raftpb.ConfChangeRemoveNode {
		return false
	}
	voters := cl.VotingMemberIDs()
	return len(voters) == 1 && uint64(voters[0]) == cc.GetNodeId()
}

func memberJSON(m *membership.Member) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode member %s: %w", m.ID, err)
	}
	return b, nil
}

// applySnapshot swaps in the database a leader sent (etcd's applySnapshot).
// raftnode calls it only once the snapshot is durable; the transport saved
// the database as <index>.snap.db beforehand.
func (s *Server) applySnapshot(snapshot *raftpb.Snapshot) error {
	s.metrics.snapshotApply.Inc()
	defer s.metrics.snapshotApply.Dec()
	lg := s.lg
	idx := snapshot.GetMetadata().GetIndex()
	snapPath, err := s.r.Snapshotter().DBFilePath(idx)
	if err != nil {
		return fmt.Errorf("find database for snapshot %d: %w", idx, err)
	}
	s.bemu.Lock()
	bemuLocked := true
	defer func() {
		if bemuLocked {
			s.bemu.Unlock()
		}
	}()
	if err := os.Rename(snapPath, s.cfg.backendPath()); err != nil {
		return fmt.Errorf("install snapshot database: %w", err)
	}
	hooks := s.backendHooks()
	newbe, err := openBackend(s.cfg, hooks)
	if err != nil {
		return err
	}
	// The consistent index must follow the new backend before the lessor
	// recovers, or the lessor's commit would write the old index into it.
	s.ci.SetBackend(newbe)
	s.lessor.Recover(newbe, func() lease.TxnDelete { return s.kv.Write(traceutil.TODO()) })
	if err := s.kv.Restore(newbe); err != nil {
		return fmt.Errorf("restore mvcc from snapshot %d: %w", idx, err)
	}
	newbe.SetTxPostLockInsideApplyHook(s.txPostLockInsideApplyHook())
	s.dd = loadDedupe(newbe, hooks.journal, s.ci.ConsistentIndex())
	alarms, err := v3alarm.NewAlarmStore(lg, schema.NewAlarmBackend(lg, newbe))
	if err != nil {
		return fmt.Errorf("restore alarms from snapshot: %w", err)
	}
	oldbe := s.be
	s.be = newbe
	s.alarmStore = alarms
	s.bemu.Unlock()
	bemuLocked = false
	// Closing waits for open read transactions; don't hold up apply.
	s.goAttach(func() {
		if err := oldbe.Close(); err != nil {
			lg.Warn("failed to close old backend", zap.Error(err))
		}
	})
	s.authStore.Recover(schema.NewAuthBackend(lg, newbe))
	s.cluster.SetBackend(schema.NewMembershipBackend(lg, newbe))
	s.cluster.Recover(api.UpdateCapability)
	s.membershipVersion.Add(1)
	s.uberApply = s.newUberApplier()
	s.appliedIndex.Store(idx)
	s.appliedTerm.Store(snapshot.GetMetadata().GetTerm())
	lg.Info("applied leader snapshot", zap.Uint64("snapshot-index", idx), zap.Uint64("consistent-index", s.ci.ConsistentIndex()))
	return nil
}

// leadershipChanged runs in raftnode's Ready loop (etcd's updateLeadership).
func (s *Server) leadershipChanged(isLeader, leaderChanged bool) {
	if leaderChanged {
		s.metrics.leaderChanges.Inc()
	}
	if !isLeader {
		s.lessor.Demote()
		if s.compactor != nil {
			s.compactor.Pause()
		}
		return
	}
	if leaderChanged {
		s.leadElectedTime.Store(time.Now().UnixNano())
	}
	if s.compactor != nil {
		s.compactor.Resume()
	}
}

// raftStatus is the apply package's view of raft.
type raftStatus struct{ s *Server }

func (r raftStatus) MemberID() types.ID     { return r.s.memberID }
func (r raftStatus) Leader() types.ID       { return r.s.Leader() }
func (r raftStatus) CommittedIndex() uint64 { return r.s.CommittedIndex() }
func (r raftStatus) AppliedIndex() uint64   { return r.s.AppliedIndex() }
func (r raftStatus) Term() uint64           { return r.s.Term() }

// snapshotServer would force a snapshot on a cluster downgrade, which we
// never propose.
type snapshotServer struct{}

func (snapshotServer) ForceSnapshot() {}
