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
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/lease"
)

// This file serves the peer requests other members send (etcd serves them
// over HTTP on the peer port: etcdhttp/peer.go, leasehttp).

// Peer request methods (every member serves them; the ids are part of the protocol between members).
const (
	methodLeaseRenew      uint8 = 1 // lease id u64 → ttl i64 (etcd: /leases)
	methodLeaseTimeToLive uint8 = 2 // pb.LeaseTimeToLiveRequest → Response (etcd: /leases/internal)
	methodPromote         uint8 = 3 // member id u64 → members JSON (etcd: /members/promote)
	methodJoin            uint8 = 4 // joinRequest → clusterInfo (ours)
	methodMembers         uint8 = 5 // → clusterInfo (etcd: GET /members + cluster id header)
	methodRemoved         uint8 = 6 // cluster id u64 + member id u64: "you were removed" (etcd: 410 Gone)
)

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

// servePeers registers the peer-request handlers; from now on other
// members may forward to us.
func (s *Server) servePeers() {
	for _, m := range []uint8{methodLeaseRenew, methodLeaseTimeToLive, methodPromote, methodJoin, methodMembers, methodRemoved} {
		s.peers.Handle(m, codedHandler(s.localHandler(m)))
	}
}

// tellRemoved tells a removed member that still sends raft messages (it
// missed its own removal) that it is out, like etcd's peers answering 410.
// It runs on the transport's receive loop: the call goes off it.
func (s *Server) tellRemoved(id uint64, peer string) {
	req := binary.BigEndian.AppendUint64(nil, uint64(s.cluster.ID()))
	req = binary.BigEndian.AppendUint64(req, id)
	s.goAttach(func() {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		if _, err := s.peers.CallPeer(ctx, peer, methodRemoved, req); err != nil {
			s.lg.Debug("could not tell a removed member it was removed", zap.String("member-id", types.ID(id).String()), zap.Error(err))
		}
	})
}

// handleRemoved stops this member when a member of its own cluster says it
// was removed. Only a peer that is a current member by our committed
// membership is believed (the mesh already authenticated it).
func (s *Server) handleRemoved(_ context.Context, src string, req []byte) ([]byte, error) {
	if len(req) != 16 {
		return nil, errors.New("kvstore: malformed removal notice")
	}
	cid, id := types.ID(binary.BigEndian.Uint64(req)), types.ID(binary.BigEndian.Uint64(req[8:]))
	if cid != s.cluster.ID() || id != s.memberID || s.memberByPeer(src) == nil {
		return nil, errors.New("kvstore: removal notice not for this member")
	}
	s.setStopErr(ErrRemoved)
	s.lg.Warn("a member of the cluster says this member was removed; stopping",
		zap.String("member-id", s.memberID.String()), zap.String("told-by", src), zap.Error(ErrRemoved))
	go s.HardStop()
	return nil, nil
}

// memberByPeer is the member, other than this one, whose network peer is
// peer; nil when there is none.
func (s *Server) memberByPeer(peer string) *Member {
	for _, m := range s.cluster.Members() {
		if m.ID != s.memberID && s.peers.PeerOwns(peer, m.PeerURLs) {
			return m
		}
	}
	return nil
}

// localHandler is the handler of method, also for calls to this member.
func (s *Server) localHandler(method uint8) peerHandler {
	switch method {
	case methodLeaseRenew:
		return s.handleLeaseRenew
	case methodLeaseTimeToLive:
		return s.handleLeaseTimeToLive
	case methodPromote:
		return s.handlePromote
	case methodJoin:
		return s.handleJoin
	case methodRemoved:
		return s.handleRemoved
	default:
		return s.handleMembers
	}
}

// handleLeaseRenew renews on the leader for a follower that forwarded a
// keepalive (auth was checked there).
func (s *Server) handleLeaseRenew(ctx context.Context, _ string, req []byte) ([]byte, error) {
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

func (s *Server) handleLeaseTimeToLive(ctx context.Context, _ string, req []byte) ([]byte, error) {
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

func (s *Server) handlePromote(ctx context.Context, _ string, req []byte) ([]byte, error) {
	if len(req) != 8 {
		return nil, errors.New("kvstore: malformed promote request")
	}
	ms, err := s.promoteMember(ctx, binary.BigEndian.Uint64(req))
	if err != nil {
		return nil, err
	}
	return json.Marshal(ms)
}

// handleMembers answers a member joining with --initial-cluster-state
// existing: cluster id and the committed members.
func (s *Server) handleMembers(ctx context.Context, _ string, _ []byte) ([]byte, error) {
	return json.Marshal(clusterInfo{ClusterID: s.cluster.ID(), Members: s.cluster.Members()})
}

// handleJoin adds the sender as a learner; a follower forwards to the
// leader. A retried join (its answer was lost) finds the learner it added
// by peer URLs and gets the same answer.
func (s *Server) handleJoin(ctx context.Context, src string, req []byte) ([]byte, error) {
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
	if !s.peers.PeerOwns(src, urls.StringSlice()) && s.memberByPeer(src) == nil {
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
