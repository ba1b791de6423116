package kvstore

import (
	"context"
	"encoding/json"
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
// Context is the member JSON, validated again when applied. etcd's strict
// reconfiguration checks that need transport health (is the leader
// connected to a quorum) are not done yet.

// AddMember proposes adding memb (as a learner when memb.IsLearner).
func (s *Server) AddMember(ctx context.Context, memb Member) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	b, err := json.Marshal(memb)
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode member: %w", err)
	}
	if !memb.IsLearner && !s.cluster.IsReadyToAddVotingMember() {
		return nil, servererrors.ErrNotEnoughStartedMembers
	}
	cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(uint64(memb.ID)), Context: b}
	if memb.IsLearner {
		cc.Type = raftpb.ConfChangeAddLearnerNode.Enum()
	}
	return s.configure(ctx, cc)
}

// RemoveMember proposes removing member id.
func (s *Server) RemoveMember(ctx context.Context, id uint64) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	if m := s.cluster.Member(types.ID(id)); (m == nil || !m.IsLearner) && !s.cluster.IsReadyToRemoveVotingMember(id) {
		return nil, servererrors.ErrNotEnoughStartedMembers
	}
	return s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: new(id)})
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
// knows how far a learner is; a follower returns ErrNotLeader (etcd
// forwards it to the leader; that comes with the mesh).
func (s *Server) PromoteMember(ctx context.Context, id uint64) ([]*Member, error) {
	if err := s.checkMembershipOperationPermission(ctx); err != nil {
		return nil, err
	}
	if err := s.isLearnerReady(id); err != nil {
		return nil, err
	}
	if !s.cluster.IsReadyToPromoteMember(id) {
		return nil, servererrors.ErrNotEnoughStartedMembers
	}
	b, err := json.Marshal(membership.ConfigChangeContext{Member: membership.Member{ID: types.ID(id)}, IsPromote: true})
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode promotion: %w", err)
	}
	return s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: new(id), Context: b})
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
	if err := s.r.ProposeConfChange(cctx, cc); err != nil {
		s.w.Trigger(cc.GetId(), nil)
		if cctx.Err() != nil {
			return nil, s.parseProposeCtxErr(cctx.Err(), start)
		}
		return nil, err
	}
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
	case <-cctx.Done():
		s.w.Trigger(cc.GetId(), nil)
		return nil, s.parseProposeCtxErr(cctx.Err(), start)
	case <-s.stopping:
		s.w.Trigger(cc.GetId(), nil)
		return nil, servererrors.ErrStopped
	}
}

// stopAfterRemoval stops a member that applied its own removal, after a
// delay so the commit reaches the others; Stop ends it early.
func (s *Server) stopAfterRemoval() {
	s.lg.Warn("this member was removed from the cluster; stopping", zap.String("member-id", s.memberID.String()))
	select {
	case <-time.After(removedMemberStopDelay):
		s.Stop()
	case <-s.stopping:
	}
}
