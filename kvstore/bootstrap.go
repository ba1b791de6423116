package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/raftnode"
)

// bootstrap creates (or restarts) raft in one of three modes and sets
// s.r, s.memberID and s.cluster (and s.bootPeers when joining):
//
//   - a WAL exists: restart from it; bootstrap flags are ignored;
//   - joining (Join, or InitialClusterState "existing"): ask the cluster
//     over the peers for our id and its members, start with an empty log
//     (etcd's bootstrapExistingClusterNoWAL);
//   - otherwise: a new cluster from the static initial cluster.
func (s *Server) bootstrap(ctx context.Context, raftCfg raftnode.Config, haveWAL, joining bool) (types.ID, error) {
	switch {
	case haveWAL:
		return s.restartFromWAL(raftCfg)
	case joining:
		return s.joinWithEmptyLog(ctx, raftCfg)
	default:
		return s.bootstrapNewCluster(raftCfg)
	}
}

// restartFromWAL recovers raft from the WAL and the membership from the
// backend.
func (s *Server) restartFromWAL(raftCfg raftnode.Config) (clusterID types.ID, err error) {
	cfg, lg, be := s.cfg, s.lg, s.be
	cs, err := confStateFromBackend(lg, be)
	if err != nil {
		return 0, err
	}
	s.r, err = raftnode.Restart(raftCfg, raftnode.Recovery{ConfState: cs, AppliedIndex: s.ci.ConsistentIndex()})
	if err != nil {
		return 0, fmt.Errorf("kvstore: restart raft from %s: %w", cfg.walDir(), err)
	}
	s.memberID, clusterID = types.ID(s.r.ID()), types.ID(s.r.ClusterID())
	s.cluster = membership.NewCluster(lg, membership.WithMaxLearners(cfg.MaxLearners))
	s.cluster.SetID(s.memberID, clusterID)
	s.cluster.SetBackend(schema.NewMembershipBackend(lg, be))
	s.cluster.Recover(api.UpdateCapability)
	return clusterID, nil
}

// joinWithEmptyLog is etcd's bootstrapExistingClusterNoWAL: learn our id
// and the cluster from a member, then start with an empty log; the leader
// sends the log (or a snapshot) including the membership.
func (s *Server) joinWithEmptyLog(ctx context.Context, raftCfg raftnode.Config) (clusterID types.ID, err error) {
	cfg, lg, be := s.cfg, s.lg, s.be
	var info clusterInfo
	if cfg.Join {
		info, err = joinCluster(ctx, cfg, s.peers)
	} else {
		info, err = fetchExistingCluster(ctx, cfg, s.peers)
	}
	if err != nil {
		return 0, err
	}
	s.memberID, clusterID = info.MemberID, info.ClusterID
	s.bootPeers = map[types.ID][]string{}
	for _, m := range info.Members {
		s.bootPeers[m.ID] = m.PeerURLs
	}
	s.cluster = membership.NewCluster(lg, membership.WithMaxLearners(cfg.MaxLearners))
	s.r, err = raftnode.Create(raftCfg, raftnode.Bootstrap{NodeID: uint64(s.memberID), ClusterID: uint64(clusterID)})
	if err != nil {
		return 0, fmt.Errorf("kvstore: create raft member: %w", err)
	}
	s.cluster.SetID(s.memberID, clusterID)
	s.cluster.SetBackend(schema.NewMembershipBackend(lg, be))
	lg.Info("joining an existing cluster with an empty log",
		zap.String("member-id", s.memberID.String()), zap.String("cluster-id", clusterID.String()),
		zap.Int("members", len(info.Members)), zap.Bool("as-learner", cfg.Join))
	return clusterID, nil
}

// bootstrapNewCluster starts a new cluster from the static initial cluster.
func (s *Server) bootstrapNewCluster(raftCfg raftnode.Config) (clusterID types.ID, err error) {
	cl, peers, err := newClusterMembership(s.cfg)
	if err != nil {
		return 0, err
	}
	s.cluster = cl
	s.memberID, clusterID = cl.MemberByName(s.cfg.Name).ID, cl.ID()
	s.r, err = raftnode.Create(raftCfg, raftnode.Bootstrap{NodeID: uint64(s.memberID), ClusterID: uint64(clusterID), Peers: peers})
	if err != nil {
		return 0, fmt.Errorf("kvstore: create raft member: %w", err)
	}
	s.cluster.SetID(s.memberID, clusterID)
	s.cluster.SetBackend(schema.NewMembershipBackend(s.lg, s.be))
	return clusterID, nil
}

// newClusterMembership derives member and cluster ids from the initial
// cluster exactly as etcd does, and the raft peers whose conf-change
// entries will add the members when applied.
func newClusterMembership(cfg Config) (*membership.RaftCluster, []raft.Peer, error) {
	cl, err := membership.NewClusterFromURLsMap(cfg.Logger, cfg.InitialClusterToken, cfg.InitialCluster, membership.WithMaxLearners(cfg.MaxLearners))
	if err != nil {
		return nil, nil, fmt.Errorf("kvstore: initial cluster %s: %w", cfg.InitialCluster, err)
	}
	self := cl.MemberByName(cfg.Name)
	if self == nil {
		return nil, nil, fmt.Errorf("kvstore: member %q is not in the initial cluster %s", cfg.Name, cfg.InitialCluster)
	}
	var peers []raft.Peer
	for _, id := range cl.MemberIDs() {
		ctx, err := memberJSON(cl.Member(id))
		if err != nil {
			return nil, nil, err
		}
		peers = append(peers, raft.Peer{ID: uint64(id), Context: ctx})
	}
	return cl, peers, nil
}

// confStateFromBackend is etcd's buildConfStateFromV3store.
func confStateFromBackend(lg *zap.Logger, be backend.Backend) (*raftpb.ConfState, error) {
	mb := schema.NewMembershipBackend(lg, be)
	mb.MustCreateBackendBuckets()
	members, _ := mb.MustReadMembersFromBackend()
	cs := &raftpb.ConfState{}
	for _, m := range members {
		if m.IsLearner {
			cs.Learners = append(cs.Learners, uint64(m.ID))
		} else {
			cs.Voters = append(cs.Voters, uint64(m.ID))
		}
	}
	return cs, nil
}

// askCluster sends method to reachable peers, one after the other, until
// one answers with a clusterInfo that accept takes, or ctx ends (etcd's
// GetClusterFromRemotePeers, over the mesh).
func askCluster(ctx context.Context, lg *zap.Logger, peers Peers, method uint8, req []byte,
	accept func(*clusterInfo) error) (clusterInfo, error) {
	var lastErr error = errors.New("no other mesh peer is reachable yet")
	for {
		for _, p := range peers.ReachablePeers() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			b, err := peers.CallPeer(cctx, p, method, req)
			cancel()
			if err == nil {
				var info clusterInfo
				if err = json.Unmarshal(b, &info); err == nil {
					if err = accept(&info); err == nil {
						return info, nil
					}
				}
			}
			lastErr = fmt.Errorf("peer %s: %w", p, fromRemote(err))
			lg.Info("cluster bootstrap request not answered yet; will retry", zap.String("peer", p), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return clusterInfo{}, fmt.Errorf("kvstore: no member of the cluster answered over the mesh (%w); last error: %w", ctx.Err(), lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// joinCluster asks the cluster to add us as a learner.
func joinCluster(ctx context.Context, cfg Config, peers Peers) (clusterInfo, error) {
	req, err := json.Marshal(joinRequest{Name: cfg.Name, PeerURLs: cfg.PeerURLs.StringSlice()})
	if err != nil {
		return clusterInfo{}, fmt.Errorf("kvstore: encode join request: %w", err)
	}
	return askCluster(ctx, cfg.Logger, peers, methodJoin, req, func(info *clusterInfo) error {
		if info.MemberID == 0 || info.ClusterID == 0 {
			return errors.New("incomplete join answer")
		}
		return nil
	})
}

// fetchExistingCluster is etcd's GetClusterFromRemotePeers plus finding
// ourselves by peer URLs (ValidateClusterAndAssignIDs).
func fetchExistingCluster(ctx context.Context, cfg Config, peers Peers) (clusterInfo, error) {
	want := cfg.PeerURLs.StringSlice()
	sort.Strings(want)
	return askCluster(ctx, cfg.Logger, peers, methodMembers, nil, func(info *clusterInfo) error {
		for _, m := range info.Members {
			got := slices.Clone(m.PeerURLs)
			sort.Strings(got)
			if slices.Equal(got, want) {
				info.MemberID = m.ID
				return nil
			}
		}
		return fmt.Errorf("this member's peer URLs %v are not in the cluster's member list (run `etcdctl member add` first)", want)
	})
}
