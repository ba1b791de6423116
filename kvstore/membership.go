package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/raft/v3/raftpb"
)

// readyPercentThreshold is how far a learner must have caught up with the
// leader's log before it may be promoted (etcd's value).
const readyPercentThreshold = 0.9

// removedMemberStopDelay lets the removal's commit reach the other members
// before a removed member stops (etcd waits the same).
const removedMemberStopDelay = time.Second

// The membership methods are etcd's (server.go): v1 conf changes whose
// Context is the member JSON, validated again when applied, with etcd's
// strict reconfiguration checks (unless Config.DisableStrictReconfigCheck):
// "started" members from the membership, "connected" from the mesh routes
// (a peer reachable for at least healthInterval counts as active).

// AddMember proposes adding memb (as a learner when memb.IsLearner).
func (s *Server) AddMember(ctx context.Context, memb Member) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	if err := s.mayAddMember(memb); err != nil {
		return nil, err
	}
	return s.configure(ctx, addMemberConfChange(memb))
}

func addMemberConfChange(memb Member) *raftpb.ConfChange {
	// json.Marshal of a Member cannot fail (plain fields only).
	b, _ := json.Marshal(memb)
	cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(uint64(memb.ID)), Context: b}
	if memb.IsLearner {
		cc.Type = raftpb.ConfChangeAddLearnerNode.Enum()
	}
	return cc
}

// mayAddMember is etcd's: adding a voter needs enough started members, and
// any add needs this member connected to a quorum of the grown cluster.
func (s *Server) mayAddMember(memb Member) error {
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	if !memb.IsLearner && !s.cluster.IsReadyToAddVotingMember() {
		s.lg.Warn("rejecting member add request; not enough started members", zap.String("requested-member-add", memb.ID.String()))
		return servererrors.ErrNotEnoughStartedMembers
	}
	voters := s.cluster.VotingMembers()
	if len(voters) == 1 {
		return nil
	}
	n, known := s.numConnectedSince(time.Now().Add(-s.cfg.healthInterval), voters)
	if known && n < (len(voters)+1)/2+1 {
		s.lg.Warn("rejecting member add request; this member has not been connected to enough peers for the grown cluster's quorum",
			zap.String("requested-member-add", memb.ID.String()), zap.Int("active-peers", n))
		return servererrors.ErrUnhealthy
	}
	return nil
}

// RemoveMember proposes removing member id.
func (s *Server) RemoveMember(ctx context.Context, id uint64) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	if m := s.cluster.Member(types.ID(id)); m != nil && !m.IsLearner && len(s.cluster.VotingMembers()) == 1 {
		// raft cannot apply a configuration without voters (it panics);
		// refuse it whatever the strictness.
		return nil, servererrors.ErrNotEnoughStartedMembers
	}
	if err := s.mayRemoveMember(types.ID(id)); err != nil {
		return nil, err
	}
	return s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: new(id)})
}

// mayRemoveMember is etcd's: keep a started quorum, and when removing an
// active voter keep an active quorum.
func (s *Server) mayRemoveMember(id types.ID) error {
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	if m := s.cluster.Member(id); m != nil && m.IsLearner {
		return nil
	}
	if !s.cluster.IsReadyToRemoveVotingMember(uint64(id)) {
		return servererrors.ErrNotEnoughStartedMembers
	}
	// A member that is down is not part of the active quorum anyway.
	if t, known := s.activeSince(id); id != s.memberID && known && t.IsZero() {
		return nil
	}
	voters := s.cluster.VotingMembers()
	n, known := s.numConnectedSince(time.Now().Add(-s.cfg.healthInterval), voters)
	if known && n-1 < 1+(len(voters)-1)/2 {
		s.lg.Warn("rejecting member remove request; removing it would leave too few active members for a quorum",
			zap.String("requested-member-remove", id.String()), zap.Int("active-peers", n))
		return servererrors.ErrUnhealthy
	}
	return nil
}

// UpdateMember proposes new peer URLs for memb.ID.
func (s *Server) UpdateMember(ctx context.Context, memb Member) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	b, err := json.Marshal(memb)
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode member: %w", err)
	}
	return s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeUpdateNode.Enum(), NodeId: new(uint64(memb.ID)), Context: b})
}

// PromoteMember promotes a caught-up learner to a voter. Only the leader
// knows how far a learner is: a follower forwards the request to it over
// the mesh (etcd forwards it over HTTP), retrying across leader changes.
func (s *Server) PromoteMember(ctx context.Context, id uint64) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	ms, err := s.promoteMember(ctx, id)
	if !errors.Is(err, servererrors.ErrNotLeader) {
		return ms, err
	}
	return s.forwardPromote(ctx, id)
}

// promoteMember promotes on the leader (ErrNotLeader elsewhere).
func (s *Server) promoteMember(ctx context.Context, id uint64) ([]*Member, error) {
	if err := s.isLearnerReady(id); err != nil {
		s.metrics.promoteFailed.WithLabelValues(err.Error()).Inc()
		return nil, err
	}
	if m := s.cluster.Member(types.ID(id)); m != nil && !m.IsLearner {
		return nil, membership.ErrMemberNotLearner
	}
	if !s.cfg.DisableStrictReconfigCheck && !s.cluster.IsReadyToPromoteMember(id) {
		return nil, servererrors.ErrNotEnoughStartedMembers
	}
	b, err := json.Marshal(membership.ConfigChangeContext{Member: membership.Member{ID: types.ID(id)}, IsPromote: true})
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode promotion: %w", err)
	}
	ms, err := s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(id), Context: b})
	if err == nil {
		s.metrics.promoteSucceed.Inc()
	}
	return ms, err
}

// MemberList is the committed membership, after a ReadIndex barrier when
// the request asks for a linearizable answer.
func (s *Server) MemberList(ctx context.Context, r *pb.MemberListRequest) ([]*Member, error) {
	if r.Linearizable {
		if err := s.LinearizableReadNotify(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.requireAuthInfo(ctx); err != nil {
		return nil, err
	}
	return s.cluster.Members(), nil
}

func (s *Server) checkMembershipOperationPermission(ctx context.Context) error {
	ai, err := s.AuthInfoFromCtx(ctx)
	if err != nil {
		return err
	}
	return s.authStore.IsAdminPermitted(ai)
}

// isLearnerReady checks, on the leader, that the learner's log matches at
// least readyPercentThreshold of the leader's.
func (s *Server) isLearnerReady(id uint64) error {
	if err := s.waitAppliedIndex(); err != nil {
		return err
	}
	st := s.r.Status()
	if st.Progress == nil {
		return servererrors.ErrNotLeader
	}
	pr, ok := st.Progress[id]
	if !ok {
		return membership.ErrIDNotFound
	}
	leaderMatch := st.Progress[st.ID].Match
	if leaderMatch == 0 || float64(pr.Match)/float64(leaderMatch) < readyPercentThreshold {
		s.lg.Warn("rejecting learner promotion: learner is not ready",
			zap.String("learner-id", types.ID(id).String()), zap.Uint64("learner-match", pr.Match), zap.Uint64("leader-match", leaderMatch))
		return servererrors.ErrLearnerNotReady
	}
	return nil
}

// configure proposes a conf change and waits until it is applied.
func (s *Server) configure(ctx context.Context, cc *raftpb.ConfChange) ([]*Member, error) {
	cc.Id = new(s.reqIDGen.Next())
	ch := s.w.Register(cc.GetId())
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	leaderChanged, routeChanged := s.proposalLossNotify()
	if err := s.r.ProposeConfChange(cctx, cc); err != nil {
		s.w.Trigger(cc.GetId(), nil)
		if cctx.Err() != nil {
			return nil, s.parseProposeCtxErr(cctx.Err(), start)
		}
		return nil, err
	}
	// Raft also drops a conf change silently while its own applied index
	// still trails the previous conf change (it learns what we applied only
	// at the next Advance), so a change right after another one is retried
	// on a timer as well.
	retry := time.NewTicker(max(5*s.cfg.HeartbeatInterval, 100*time.Millisecond))
	defer retry.Stop()
	for {
		select {
		case x := <-ch:
			resp, ok := x.(*confChangeResponse)
			if !ok {
				return nil, servererrors.ErrStopped
			}
			s.lg.Info("applied a configuration change through raft",
				zap.String("raft-conf-change", cc.GetType().String()),
				zap.String("raft-conf-change-node-id", types.ID(cc.GetNodeId()).String()))
			return resp.members, resp.err
		case <-leaderChanged:
		case <-routeChanged:
		case <-retry.C:
		case <-cctx.Done():
			s.w.Trigger(cc.GetId(), nil)
			return nil, s.parseProposeCtxErr(cctx.Err(), start)
		case <-s.stopping:
			s.w.Trigger(cc.GetId(), nil)
			return nil, servererrors.ErrStopped
		}
		// The proposal may have been lost (see processInternalRaftRequestOnce)
		// or dropped. A second copy that commits too is refused when applied
		// (the member exists, is removed or is no learner any more) and
		// nobody waits for its answer; an update applies the same change
		// again. While one is pending raft drops the others.
		leaderChanged, routeChanged = s.proposalLossNotify()
		if err := s.r.ProposeConfChange(cctx, cc); err != nil {
			s.lg.Debug("re-proposing a configuration change failed", zap.Error(err))
		}
	}
}

// stopAfterRemoval stops a member that applied its own removal, after a
// delay so the commit reaches the others; Stop ends it early.
func (s *Server) stopAfterRemoval() {
	s.setStopErr(ErrRemoved)
	s.lg.Warn("this member was removed from the cluster; stopping", zap.String("member-id", s.memberID.String()), zap.Error(ErrRemoved))
	select {
	case <-time.After(removedMemberStopDelay):
		s.HardStop()
	case <-s.stopping:
	}
}
