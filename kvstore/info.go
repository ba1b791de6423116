package kvstore

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/auth"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

func (s *Server) MemberID() types.ID  { return s.memberID }
func (s *Server) ClusterID() types.ID { return s.cluster.ID() }

// Leader is the leader this member knows of, 0 when none.
func (s *Server) Leader() types.ID { return types.ID(s.r.Lead()) }

// Term is the term of the last applied entry (etcd's header RaftTerm).
func (s *Server) Term() uint64 { return s.appliedTerm.Load() }

func (s *Server) CommittedIndex() uint64 { return s.r.CommittedIndex() }
func (s *Server) AppliedIndex() uint64   { return s.appliedIndex.Load() }

// IsLearner reports whether this member is a learner. Unlike etcd's
// RaftCluster.IsLocalMemberLearner it does not panic when the member is not
// (or no longer, or not yet) in the committed membership: grpcapi asks on
// every request, including the ones a removed or joining member receives.
//
// The answer is cached per membership version: RaftCluster.Member clones
// the member (URLs and all) on every call, which showed in the allocation
// profile of every request.
func (s *Server) IsLearner() bool {
	version, id := s.membershipVersion.Load(), s.MemberID()
	if c := s.learnerCache.Load(); c != nil && c.version == version && c.id == id {
		return c.learner
	}
	// The version is read before the membership, so a change applied
	// meanwhile only makes this entry stale, never a newer version wrong.
	m := s.cluster.Member(id)
	learner := m != nil && m.IsLearner
	s.learnerCache.Store(&learnerState{version: version, id: id, learner: learner})
	return learner
}

// learnerState is IsLearner's answer for one member id at one membership
// version.
type learnerState struct {
	version uint64
	id      types.ID
	learner bool
}

// Members is the committed membership, sorted by id.
func (s *Server) Members() []*Member { return s.cluster.Members() }

func (s *Server) KV() mvcc.WatchableKV { return s.kv }

// Backend is the current backend; a leader snapshot may replace it, so do
// not keep it across calls.
func (s *Server) Backend() backend.Backend {
	s.bemu.RLock()
	defer s.bemu.RUnlock()
	return s.be
}

func (s *Server) AuthStore() auth.AuthStore { return s.authStore }

// AuthInfoFromCtx is etcd's EtcdServer.AuthInfoFromCtx: the user of the
// token in the gRPC metadata or, with ClientCertAuthEnabled and no token,
// the CN of the verified client certificate of a TLS connection (never the
// JSON gateway's own certificate: etcd's AuthInfoFromTLS ignores requests
// that the gateway proxies).
func (s *Server) AuthInfoFromCtx(ctx context.Context) (*auth.AuthInfo, error) {
	ai, err := s.authStore.AuthInfoFromCtx(ctx)
	if ai != nil || err != nil || !s.cfg.ClientCertAuthEnabled {
		return ai, err
	}
	// AuthInfoFromTLS asserts the peer's AuthInfo to credentials.TLSInfo
	// without checking; only TLS connections carry one.
	if p, ok := peer.FromContext(ctx); !ok || p == nil {
		return nil, nil
	} else if _, ok := p.AuthInfo.(credentials.TLSInfo); !ok {
		return nil, nil
	}
	return s.authStore.AuthInfoFromTLS(ctx), nil
}

// Alarms lists the active alarms.
func (s *Server) Alarms() []*pb.AlarmMember {
	s.bemu.RLock() // a leader snapshot replaces the alarm store with the backend
	defer s.bemu.RUnlock()
	return s.alarmStore.Get(pb.AlarmType_NONE)
}

// Alarm proposes an alarm change (etcd proposes GET too).
func (s *Server) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return raftRequestAs[*pb.AlarmResponse](ctx, s, &pb.InternalRaftRequest{Alarm: r})
}

// Defragment defragments the backend; writes wait meanwhile.
func (s *Server) Defragment() error {
	release, uerr := s.useStores()
	if uerr != nil {
		return uerr
	}
	defer release()
	s.bemu.Lock()
	defer s.bemu.Unlock()
	return s.be.Defrag()
}

// MoveLeader transfers leadership to transferee and waits until it leads.
// Moving to the current leader is an immediate success.
// Like etcd, only the leader moves leadership: a follower gets ErrNotLeader
// (the gRPC layer answers it before calling, as v3rpc does).
func (s *Server) MoveLeader(ctx context.Context, lead, transferee uint64) error {
	if !s.isLeader() {
		return servererrors.ErrNotLeader
	}
	m := s.cluster.Member(types.ID(transferee))
	if m == nil || m.IsLearner {
		return servererrors.ErrBadLeaderTransferee
	}
	s.lg.Info("leadership transfer starting",
		zap.String("current-leader-member-id", types.ID(lead).String()),
		zap.String("transferee-member-id", types.ID(transferee).String()))
	s.r.TransferLeadership(ctx, lead, transferee)
	ticker := time.NewTicker(s.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for s.r.Lead() != transferee {
		select {
		case <-ctx.Done():
			return servererrors.ErrTimeoutLeaderTransfer
		case <-s.stopping:
			return servererrors.ErrStopped
		case <-ticker.C:
		}
	}
	return nil
}

// Config is the effective configuration after defaults.
func (s *Server) Config() Config { return s.cfg }

// ReadyNotify is closed once this member's attributes (name, client URLs)
// are committed, which implies the first commit of its term was applied.
func (s *Server) ReadyNotify() <-chan struct{} { return s.readych }

// StopNotify is closed once the member has stopped.
func (s *Server) StopNotify() <-chan struct{} { return s.done }

// LinearizableReadNotify waits for a ReadIndex barrier.
func (s *Server) LinearizableReadNotify(ctx context.Context) error {
	return s.read.LinearizableReadNotify(ctx)
}

func (s *Server) isLeader() bool { return s.r.IsLeader() }

func (s *Server) newHeader() *pb.ResponseHeader {
	return &pb.ResponseHeader{
		ClusterId: uint64(s.cluster.ID()),
		MemberId:  uint64(s.memberID),
		Revision:  s.kv.Rev(),
		RaftTerm:  s.Term(),
	}
}

func errStoppedOr(err error) error {
	if err != nil {
		return err
	}
	return servererrors.ErrStopped
}

// publish commits this member's attributes, like etcd's publishV3, and on
// the leader sets the cluster version if none is set yet; then the member
// is ready. It retries until it succeeds or the member stops.
func (s *Server) publish() {
	req := &membershippb.ClusterMemberAttrSetRequest{
		Member_ID: uint64(s.memberID),
		MemberAttributes: &membershippb.Attributes{
			Name:       s.cfg.Name,
			ClientUrls: s.cfg.ClientURLs.StringSlice(),
		},
	}
	for {
		select {
		case <-s.stopping:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.requestTimeout())
		_, err := s.raftRequest(ctx, &pb.InternalRaftRequest{ClusterMemberAttrSet: req})
		cancel()
		if err == nil {
			break
		}
		s.lg.Warn("failed to publish local member attributes; retrying", zap.Error(err))
		select {
		case <-time.After(s.cfg.HeartbeatInterval):
		case <-s.stopping:
			return
		}
	}
	s.maybeSetClusterVersion()
	s.readyOnce.Do(func() { close(s.readych) })
	s.lg.Info("published local member to cluster", zap.String("name", s.cfg.Name), zap.Strings("client-urls", s.cfg.ClientURLs.StringSlice()))
}

// maybeSetClusterVersion sets the cluster version to this server's
// major.minor once, on the leader (etcd's monitorClusterVersions does it for
// the minimum version of all members; every member runs the same version).
func (s *Server) maybeSetClusterVersion() {
	if !s.isLeader() || s.cluster.Version() != nil {
		return
	}
	ver := version.Cluster(version.Version) + ".0" // major.minor.0, like etcd
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.requestTimeout())
	defer cancel()
	if _, err := s.raftRequest(ctx, &pb.InternalRaftRequest{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: ver}}); err != nil {
		s.lg.Warn("failed to set cluster version", zap.String("version", ver), zap.Error(err))
	}
}

// readServer is the read package's view of the server.
type readServer struct{ s *Server }

func (r readServer) LeaderChanged() <-chan struct{}         { return r.s.r.LeaderChangedNotify() }
func (r readServer) Stopping() <-chan struct{}              { return r.s.stopping }
func (r readServer) Logger() *zap.Logger                    { return r.s.lg }
func (r readServer) AppliedIndex() uint64                   { return r.s.r.AppliedIndex() }
func (r readServer) ApplyWait(index uint64) <-chan struct{} { return r.s.r.ApplyWait(index) }
func (r readServer) NextRequestID() uint64                  { return r.s.reqIDGen.Next() }
func (r readServer) RequestTimeout() time.Duration          { return r.s.cfg.requestTimeout() }
func (r readServer) FirstCommitInTermNotify() <-chan struct{} {
	return r.s.firstCommitInTerm.Receive()
}
func (r readServer) Done() <-chan struct{} { return r.s.stopping }

// transferLeadershipOnShutdown hands leadership to the most up-to-date
// voter that is recently active in raft and reachable on the mesh, before a
// graceful Stop (etcd's TryTransferLeadershipOnShutdown). It waits about an
// election timeout: raft itself abandons a transfer after that long.
func (s *Server) transferLeadershipOnShutdown() {
	if !s.isLeader() || len(s.cluster.VotingMemberIDs()) < 2 {
		return
	}
	transferee, ok := s.pickTransferee()
	if !ok {
		s.lg.Warn("no reachable voting member to hand leadership to before stopping", zap.Error(servererrors.ErrUnhealthy))
		return
	}
	timeout := s.cfg.ElectionTimeout + 2*s.cfg.HeartbeatInterval
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if err := s.MoveLeader(ctx, uint64(s.memberID), uint64(transferee)); err != nil {
		s.lg.Warn("leadership transfer before stopping failed", zap.String("transferee", transferee.String()), zap.Error(err))
		return
	}
	s.lg.Info("handed leadership over before stopping", zap.String("new-leader", transferee.String()), zap.Duration("took", time.Since(start)))
}

// pickTransferee chooses among the voters raft sees recently active (and
// the mesh reaches) the one with the highest match index; ties go to the
// longest connected, then the lowest id, so the choice is deterministic.
func (s *Server) pickTransferee() (types.ID, bool) {
	st := s.r.Status()
	var best types.ID
	var bestMatch uint64
	var bestSince time.Time
	for _, id := range s.cluster.VotingMemberIDs() {
		if id == s.memberID {
			continue
		}
		pr, ok := st.Progress[uint64(id)]
		if !ok || pr.IsLearner || !pr.RecentActive {
			continue
		}
		since, known := s.activeSince(id)
		if known && since.IsZero() {
			continue
		}
		better := best == 0 || pr.Match > bestMatch ||
			pr.Match == bestMatch && (since.Before(bestSince) || since.Equal(bestSince) && id < best)
		if better {
			best, bestMatch, bestSince = id, pr.Match, since
		}
	}
	return best, best != 0
}
