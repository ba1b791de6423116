package kvstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"

	"github.com/meshetcd/meshetcd/kvstore/peerrpc"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/raftnode"
)

// Peer request methods (peerrpc method ids; every member serves them).
const (
	methodLeaseRenew      uint8 = 1 // lease id u64 → ttl i64 (etcd: /leases)
	methodLeaseTimeToLive uint8 = 2 // pb.LeaseTimeToLiveRequest → Response (etcd: /leases/internal)
	methodPromote         uint8 = 3 // member id u64 → members JSON (etcd: /members/promote)
	methodJoin            uint8 = 4 // joinRequest → clusterInfo (ours)
	methodMembers         uint8 = 5 // → clusterInfo (etcd: GET /members + cluster id header)
	methodRemoved         uint8 = 6 // cluster id u64 + member id u64: "you were removed" (etcd: 410 Gone)
)

// forwardRetryDelay throttles retries of a forwarded request (etcd's 50 ms).
const forwardRetryDelay = 50 * time.Millisecond

// ErrRemoved is why a member that applied its own removal stopped
// (Server.Err); etcd's peers tell a removed member the same.
var ErrRemoved = errors.New("etcdserver: the member has been permanently removed from the cluster")

// knownErrors are turned back into their sentinel values when a peer's
// handler returned them, so callers and grpcapi see etcd's errors.
var knownErrors = []error{
	servererrors.ErrStopped, servererrors.ErrCanceled, servererrors.ErrTimeout,
	servererrors.ErrTimeoutWaitAppliedIndex, servererrors.ErrLeaderChanged,
	servererrors.ErrNotEnoughStartedMembers, servererrors.ErrLearnerNotReady,
	servererrors.ErrNoLeader, servererrors.ErrNotLeader, servererrors.ErrUnhealthy,
	servererrors.ErrTooManyRequests, servererrors.ErrTimeoutDueToLeaderFail,
	servererrors.ErrTimeoutDueToConnectionLost,
	lease.ErrNotPrimary, lease.ErrLeaseNotFound,
	membership.ErrIDRemoved, membership.ErrIDExists, membership.ErrIDNotFound,
	membership.ErrPeerURLexists, membership.ErrMemberNotLearner, membership.ErrTooManyLearners,
	auth.ErrPermissionDenied, auth.ErrUserEmpty, auth.ErrAuthOldRevision,
}

func fromRemote(err error) error {
	var re *peerrpc.RemoteError
	if !errors.As(err, &re) {
		return err
	}
	for _, k := range knownErrors {
		if re.Msg == k.Error() {
			return k
		}
	}
	return err
}

// joinRequest asks the cluster to add the sender as a learner.
type joinRequest struct {
	Name     string   `json:"name"`
	PeerURLs []string `json:"peerURLs"`
}

// clusterInfo answers join and member-list requests.
type clusterInfo struct {
	MemberID  types.ID             `json:"memberID,omitempty"` // the joiner's id (join only)
	ClusterID types.ID             `json:"clusterID"`
	Members   []*membership.Member `json:"members"`
}

// startMesh opens the transport and the peer-request endpoint on cfg.Mesh.
func (s *Server) startMesh() error {
	tr, err := raftnode.NewMeshTransport(raftnode.MeshTransportConfig{Logger: s.lg, Router: s.cfg.Mesh, OnRemovedSender: s.tellRemoved})
	if err != nil {
		return fmt.Errorf("kvstore: mesh transport: %w", err)
	}
	ep, err := peerrpc.New(peerrpc.Config{Logger: s.lg, Router: s.cfg.Mesh})
	if err != nil {
		tr.Close()
		return fmt.Errorf("kvstore: peer requests: %w", err)
	}
	s.tr, s.peers = tr, ep
	return nil
}

// serveMesh registers the peer-request handlers; from now on other members
// may forward to us.
func (s *Server) serveMesh() {
	if s.peers == nil {
		return
	}
	s.peers.Handle(methodLeaseRenew, s.handleLeaseRenew)
	s.peers.Handle(methodLeaseTimeToLive, s.handleLeaseTimeToLive)
	s.peers.Handle(methodPromote, s.handlePromote)
	s.peers.Handle(methodJoin, s.handleJoin)
	s.peers.Handle(methodMembers, s.handleMembers)
	s.peers.Handle(methodRemoved, s.handleRemoved)
}

// tellRemoved tells a removed member that still sends raft messages (it
// missed its own removal) that it is out, like etcd's peers answering 410.
// It runs on the transport's receive loop: the call goes off it.
func (s *Server) tellRemoved(id uint64, peer mesh.PeerName) {
	req := binary.BigEndian.AppendUint64(nil, uint64(s.cluster.ID()))
	req = binary.BigEndian.AppendUint64(req, id)
	s.goAttach(func() {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		if _, err := s.peers.Call(ctx, peer, methodRemoved, req); err != nil {
			s.lg.Debug("could not tell a removed member it was removed", zap.String("member-id", types.ID(id).String()), zap.Error(err))
		}
	})
}

// handleRemoved stops this member when a member of its own cluster says it
// was removed. Only a peer that is a current member by our committed
// membership is believed (the mesh already authenticated it).
func (s *Server) handleRemoved(_ context.Context, src mesh.PeerName, req []byte) ([]byte, error) {
	if len(req) != 16 {
		return nil, errors.New("kvstore: malformed removal notice")
	}
	cid, id := types.ID(binary.BigEndian.Uint64(req)), types.ID(binary.BigEndian.Uint64(req[8:]))
	if cid != s.cluster.ID() || id != s.memberID || s.memberByPeer(src) == nil {
		return nil, errors.New("kvstore: removal notice not for this member")
	}
	s.setStopErr(ErrRemoved)
	s.lg.Warn("a member of the cluster says this member was removed; stopping",
		zap.String("member-id", s.memberID.String()), zap.String("told-by", string(src)), zap.Error(ErrRemoved))
	go s.HardStop()
	return nil, nil
}

func (s *Server) memberByPeer(peer mesh.PeerName) *Member {
	for _, m := range s.cluster.Members() {
		if name, err := raftnode.PeerNameFromURLs(m.PeerURLs); err == nil && name == peer && m.ID != s.memberID {
			return m
		}
	}
	return nil
}

// closeMesh stops the endpoint and transport (the router is the caller's).
func (s *Server) closeMesh() {
	if s.peers != nil {
		s.peers.Close()
	}
	if s.tr != nil {
		if err := s.tr.Close(); err != nil {
			s.lg.Warn("failed to close mesh transport", zap.Error(err))
		}
	}
}

// resolvePeer maps a member id to its mesh peer through the committed
// membership; before this member applied the membership (join, existing),
// the member list it bootstrapped from fills in.
func (s *Server) resolvePeer(id uint64) (mesh.PeerName, bool) {
	var urls []string
	if m := s.cluster.Member(types.ID(id)); m != nil {
		urls = m.PeerURLs
	} else if s.cluster.IsIDRemoved(types.ID(id)) {
		return "", false
	} else if u, ok := s.bootPeers[types.ID(id)]; ok {
		urls = u
	} else {
		return "", false
	}
	name, err := raftnode.PeerNameFromURLs(urls)
	return name, err == nil
}

// activeSince is when this member's mesh last started reaching id (zero:
// unreachable). known is false without a mesh: strict checks that need
// connectivity are skipped then, as nothing can be known.
func (s *Server) activeSince(id types.ID) (t time.Time, known bool) {
	if s.tr == nil {
		return time.Time{}, false
	}
	name, ok := s.resolvePeer(uint64(id))
	if !ok {
		return time.Time{}, true
	}
	return s.tr.ActiveSince(name), true
}

func (s *Server) numConnectedSince(since time.Time, members []*membership.Member) (n int, known bool) {
	for _, m := range members {
		if m.ID == s.memberID {
			n++
			continue
		}
		t, k := s.activeSince(m.ID)
		if !k {
			return 0, false
		}
		if !t.IsZero() && t.Before(since) {
			n++
		}
	}
	return n, true
}

// waitLeader waits until a leader is known (etcd's waitLeader).
func (s *Server) waitLeader(ctx context.Context) (types.ID, error) {
	for {
		if l := s.Leader(); l != 0 && s.cluster.Member(l) != nil {
			return l, nil
		}
		select {
		case <-time.After(s.cfg.HeartbeatInterval):
		case <-s.r.LeaderChangedNotify():
		case <-s.stopping:
			return 0, servererrors.ErrStopped
		case <-ctx.Done():
			return 0, servererrors.ErrNoLeader
		}
	}
}

// callMember runs method on member id: locally when it is us, otherwise
// over the mesh.
func (s *Server) callMember(ctx context.Context, id types.ID, method uint8, req []byte) ([]byte, error) {
	if id == s.memberID {
		return s.localHandler(method)(ctx, s.cfg.Mesh.Name(), req)
	}
	name, ok := s.resolvePeer(uint64(id))
	if !ok {
		return nil, fmt.Errorf("kvstore: member %s has no mesh peer: %w", id, membership.ErrIDNotFound)
	}
	resp, err := s.peers.Call(ctx, name, method, req)
	return resp, fromRemote(err)
}

func (s *Server) localHandler(method uint8) peerrpc.Handler {
	switch method {
	case methodLeaseRenew:
		return s.handleLeaseRenew
	case methodLeaseTimeToLive:
		return s.handleLeaseTimeToLive
	case methodPromote:
		return s.handlePromote
	case methodJoin:
		return s.handleJoin
	default:
		return s.handleMembers
	}
}

// forwardCtxErr is etcd's mapping of a forwarding loop's end.
func forwardCtxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return servererrors.ErrTimeout
	}
	return servererrors.ErrCanceled
}

// sleepCtx waits d unless ctx ends or the server stops first.
func (s *Server) sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	case <-s.stopping:
	}
}

// --- lease forwarding (etcd's leasehttp) ---

// forwardAttempt is one try of a forwarded request to the member we take
// for the leader. A dead or unreachable leader never answers over the mesh
// (there is no connection to reset, unlike etcd's HTTP), so one try must
// not use up the caller's whole request timeout: it is abandoned after an
// election timeout (a live leader answers within milliseconds), or as soon
// as a new leader emerges (changed, taken before the leader was looked
// up), and the caller's loop waits for the leader and tries again.
func (s *Server) forwardAttempt(ctx context.Context, changed <-chan struct{}, lead types.ID, method uint8, req []byte) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.ElectionTimeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-changed:
			cancel()
		case <-s.stopping:
			cancel()
		case <-done:
		}
	}()
	resp, err := s.callMember(actx, lead, method, req)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		s.lg.Debug("forwarded request to the leader abandoned", zap.String("leader", lead.String()), zap.Uint8("method", method), zap.Error(err))
	}
	return resp, err
}

func (s *Server) forwardLeaseRenew(ctx context.Context, id lease.LeaseID) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req := binary.BigEndian.AppendUint64(nil, uint64(id))
	for cctx.Err() == nil {
		changed := s.r.LeaderChangedNotify()
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return -1, err
		}
		if err := s.withStores(func() error { return s.checkLeaseRenew(ctx, id) }); err != nil {
			return 0, err
		}
		resp, err := s.forwardAttempt(cctx, changed, lead, methodLeaseRenew, req)
		if err == nil {
			if len(resp) != 8 {
				return -1, fmt.Errorf("kvstore: malformed lease renew answer from %s", lead)
			}
			return int64(binary.BigEndian.Uint64(resp)), nil
		}
		if errors.Is(err, lease.ErrLeaseNotFound) || errors.Is(err, servererrors.ErrStopped) && lead == s.memberID {
			return -1, err
		}
		s.lg.Debug("forwarded lease renew failed; retrying", zap.String("leader", lead.String()), zap.Error(err))
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return -1, forwardCtxErr(cctx.Err())
}

// handleLeaseRenew renews on the leader for a follower that forwarded a
// keepalive (auth was checked there).
func (s *Server) handleLeaseRenew(ctx context.Context, _ mesh.PeerName, req []byte) ([]byte, error) {
	if len(req) != 8 {
		return nil, errors.New("kvstore: malformed lease renew request")
	}
	id := lease.LeaseID(binary.BigEndian.Uint64(req))
	var ttl int64
	err := s.withStores(func() error {
		if !s.isLeader() {
			return lease.ErrNotPrimary
		}
		if s.lessor.Lookup(id) == nil {
			if err := s.waitAppliedIndex(); err != nil {
				return err
			}
		}
		var err error
		ttl, err = s.lessor.Renew(id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint64(nil, uint64(ttl)), nil
}

func (s *Server) forwardLeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req, err := proto.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode lease time-to-live request: %w", err)
	}
	for cctx.Err() == nil {
		changed := s.r.LeaderChangedNotify()
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return nil, err
		}
		b, err := s.forwardAttempt(cctx, changed, lead, methodLeaseTimeToLive, req)
		if err == nil {
			resp := &pb.LeaseTimeToLiveResponse{}
			if err := proto.Unmarshal(b, resp); err != nil {
				return nil, fmt.Errorf("kvstore: malformed lease time-to-live answer from %s: %w", lead, err)
			}
			resp.Header = s.newHeader()
			return resp, nil
		}
		if errors.Is(err, lease.ErrLeaseNotFound) {
			return nil, err
		}
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return nil, forwardCtxErr(cctx.Err())
}

func (s *Server) handleLeaseTimeToLive(ctx context.Context, _ mesh.PeerName, req []byte) ([]byte, error) {
	r := &pb.LeaseTimeToLiveRequest{}
	if err := proto.Unmarshal(req, r); err != nil {
		return nil, fmt.Errorf("kvstore: malformed lease time-to-live request: %w", err)
	}
	var resp *pb.LeaseTimeToLiveResponse
	err := s.withStores(func() error {
		var err error
		resp, err = s.leaseTimeToLiveOnLeader(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return proto.Marshal(resp)
}

// --- promotion (etcd forwards it to the leader over HTTP) ---

func (s *Server) forwardPromote(ctx context.Context, id uint64) ([]*Member, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req := binary.BigEndian.AppendUint64(nil, id)
	for cctx.Err() == nil {
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return nil, err
		}
		b, err := s.callMember(cctx, lead, methodPromote, req)
		if err == nil {
			var ms []*Member
			if err := json.Unmarshal(b, &ms); err != nil {
				return nil, fmt.Errorf("kvstore: malformed promote answer from %s: %w", lead, err)
			}
			return ms, nil
		}
		if errors.Is(err, servererrors.ErrLearnerNotReady) || errors.Is(err, membership.ErrIDNotFound) ||
			errors.Is(err, membership.ErrMemberNotLearner) || errors.Is(err, servererrors.ErrNotEnoughStartedMembers) {
			return nil, err
		}
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return nil, forwardCtxErr(cctx.Err())
}

func (s *Server) handlePromote(ctx context.Context, _ mesh.PeerName, req []byte) ([]byte, error) {
	if len(req) != 8 {
		return nil, errors.New("kvstore: malformed promote request")
	}
	ms, err := s.promoteMember(ctx, binary.BigEndian.Uint64(req))
	if err != nil {
		return nil, err
	}
	return json.Marshal(ms)
}

// promoteLoop runs on a member that joined as a learner: it asks the
// leader to promote it until it is a voter or no longer a member.
func (s *Server) promoteLoop() {
	interval := max(s.cfg.ElectionTimeout, 500*time.Millisecond)
	for {
		select {
		case <-s.stopping:
			return
		case <-time.After(interval):
		}
		m := s.cluster.Member(s.memberID)
		if m == nil && s.cluster.IsIDRemoved(s.memberID) {
			return
		}
		if m != nil && !m.IsLearner {
			return // a voter (promoted, or it always was one)
		}
		if m == nil {
			continue // our own AddLearner is not applied yet
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.requestTimeout())
		_, err := s.forwardPromote(ctx, uint64(s.memberID))
		cancel()
		switch {
		case err == nil:
			s.lg.Info("promoted this learner to a voting member", zap.String("member-id", s.memberID.String()))
			return
		case errors.Is(err, membership.ErrMemberNotLearner):
			return
		default:
			s.lg.Debug("learner not promoted yet", zap.Error(err))
		}
	}
}

// --- join and existing (bootstrap over the mesh) ---

// handleMembers answers a member joining with --initial-cluster-state
// existing: cluster id and the committed members.
func (s *Server) handleMembers(ctx context.Context, _ mesh.PeerName, _ []byte) ([]byte, error) {
	return json.Marshal(clusterInfo{ClusterID: s.cluster.ID(), Members: s.cluster.Members()})
}

// handleJoin adds the sender as a learner; a follower forwards to the
// leader. A retried join (its answer was lost) finds the learner it added
// by peer URLs and gets the same answer.
func (s *Server) handleJoin(ctx context.Context, src mesh.PeerName, req []byte) ([]byte, error) {
	var jr joinRequest
	if err := json.Unmarshal(req, &jr); err != nil {
		return nil, fmt.Errorf("kvstore: malformed join request: %w", err)
	}
	urls, err := types.NewURLs(jr.PeerURLs)
	if err != nil {
		return nil, fmt.Errorf("kvstore: join: peer URLs: %w", err)
	}
	// The joiner itself must own the peer URLs it asks for; a member
	// forwarding a join to the leader already checked that.
	if name, err := raftnode.PeerNameFromURLs(urls.StringSlice()); err != nil || name != src && s.memberByPeer(src) == nil {
		return nil, fmt.Errorf("kvstore: join: mesh peer %q does not match peer URLs %v", src, jr.PeerURLs)
	}
	if !s.isLeader() {
		lead, err := s.waitLeader(ctx)
		if err != nil {
			return nil, err
		}
		if lead != s.memberID {
			return s.callMember(ctx, lead, methodJoin, req)
		}
	}
	memb := s.memberByPeerURLs(urls.StringSlice())
	if memb != nil && memb.Name != "" {
		return nil, membership.ErrPeerURLexists
	}
	if memb == nil {
		now := time.Now()
		memb = membership.NewMemberAsLearner("", urls, "", &now)
		if err := s.mayAddMember(*memb); err != nil {
			return nil, err
		}
		s.lg.Info("adding a joining member as learner", zap.String("name", jr.Name), zap.String("member-id", memb.ID.String()), zap.Strings("peer-urls", jr.PeerURLs))
		if _, err := s.configure(ctx, addMemberConfChange(*memb)); err != nil {
			return nil, err
		}
	}
	return json.Marshal(clusterInfo{MemberID: memb.ID, ClusterID: s.cluster.ID(), Members: s.cluster.Members()})
}

func (s *Server) memberByPeerURLs(urls []string) *Member {
	want := slices.Clone(urls)
	sort.Strings(want)
	for _, m := range s.cluster.Members() {
		got := slices.Clone(m.PeerURLs)
		sort.Strings(got)
		if slices.Equal(got, want) {
			return m
		}
	}
	return nil
}

// askCluster sends method to reachable mesh peers, one after the other,
// until one answers with a clusterInfo that accept takes, or ctx ends.
func askCluster(ctx context.Context, lg *zap.Logger, r *mesh.Router, ep *peerrpc.Endpoint, method uint8, req []byte,
	accept func(*clusterInfo) error) (clusterInfo, error) {
	var lastErr error = errors.New("no other mesh peer is reachable yet")
	for {
		for _, p := range r.Status().Peers {
			if p.Name == r.Name() || !p.Reachable {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			b, err := ep.Call(cctx, p.Name, method, req)
			cancel()
			if err == nil {
				var info clusterInfo
				if err = json.Unmarshal(b, &info); err == nil {
					if err = accept(&info); err == nil {
						return info, nil
					}
				}
			}
			lastErr = fmt.Errorf("peer %s: %w", p.Name, fromRemote(err))
			lg.Info("cluster bootstrap request not answered yet; will retry", zap.String("peer", string(p.Name)), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return clusterInfo{}, fmt.Errorf("kvstore: no member of the cluster answered over the mesh (%w); last error: %w", ctx.Err(), lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// joinCluster asks the cluster to add us as a learner.
func joinCluster(ctx context.Context, cfg Config, ep *peerrpc.Endpoint) (clusterInfo, error) {
	req, err := json.Marshal(joinRequest{Name: cfg.Name, PeerURLs: cfg.PeerURLs.StringSlice()})
	if err != nil {
		return clusterInfo{}, fmt.Errorf("kvstore: encode join request: %w", err)
	}
	return askCluster(ctx, cfg.Logger, cfg.Mesh, ep, methodJoin, req, func(info *clusterInfo) error {
		if info.MemberID == 0 || info.ClusterID == 0 {
			return errors.New("incomplete join answer")
		}
		return nil
	})
}

// fetchExistingCluster is etcd's GetClusterFromRemotePeers plus finding
// ourselves by peer URLs (ValidateClusterAndAssignIDs).
func fetchExistingCluster(ctx context.Context, cfg Config, ep *peerrpc.Endpoint) (clusterInfo, error) {
	want := cfg.PeerURLs.StringSlice()
	sort.Strings(want)
	return askCluster(ctx, cfg.Logger, cfg.Mesh, ep, methodMembers, nil, func(info *clusterInfo) error {
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
