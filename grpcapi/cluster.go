package grpcapi

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"

	"github.com/meshetcd/meshetcd/kvstore"
)

// memberChanger is the part of *kvstore.Server that changes membership
// (etcd's EtcdServer.AddMember & co). It is not in kvstore.API so fakes and
// other back ends need not implement it; one that does not answers
// codes.Unimplemented.
type memberChanger interface {
	AddMember(ctx context.Context, memb kvstore.Member) ([]*kvstore.Member, error)
	RemoveMember(ctx context.Context, id uint64) ([]*kvstore.Member, error)
	UpdateMember(ctx context.Context, memb kvstore.Member) ([]*kvstore.Member, error)
	PromoteMember(ctx context.Context, id uint64) ([]*kvstore.Member, error)
}

// clusterServer is etcd's Cluster service (v3rpc/member.go): the membership
// changes go to kvstore, whose errors togRPCError maps to etcd's
// (ErrGRPCMemberNotFound, ErrGRPCPeerURLExist, ErrGRPCMemberNotLearner,
// ErrGRPCLearnerNotReady, ErrGRPCTooManyLearners, ErrGRPCUnhealthy, ...).
type clusterServer struct {
	pb.UnimplementedClusterServer

	s   kvstore.API
	hdr header
}

func newClusterServer(s kvstore.API) *clusterServer {
	return &clusterServer{s: s, hdr: newHeader(s)}
}

// changer returns the back end's membership calls, or the error a back end
// without them answers.
func (cs *clusterServer) changer(rpc string) (memberChanger, error) {
	mc, ok := cs.s.(memberChanger)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "meshetcd: %s is not supported by this back end", rpc)
	}
	return mc, nil
}

func (cs *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.GetLinearizable() {
		if err := cs.s.LinearizableReadNotify(ctx); err != nil {
			return nil, togRPCError(err)
		}
	}
	if err := requireAuthInfo(ctx, cs.s); err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MemberListResponse{Header: cs.header(), Members: membersToProtoMembers(cs.s.Members())}, nil
}

func (cs *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	urls, err := types.NewURLs(r.GetPeerURLs())
	if err != nil {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	mc, err := cs.changer("member add")
	if err != nil {
		return nil, err
	}
	// The id derives from the peer URLs and the time, as in etcd, so two
	// adds of the same URLs at different times get different ids (the
	// second is refused with ErrGRPCPeerURLExist anyway).
	now := time.Now()
	var m *membership.Member
	if r.GetIsLearner() {
		m = membership.NewMemberAsLearner("", urls, "", &now)
	} else {
		m = membership.NewMember("", urls, "", &now)
	}
	membs, err := mc.AddMember(ctx, *m)
	if err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MemberAddResponse{
		Header: cs.header(),
		Member: &pb.Member{
			ID:        uint64(m.ID),
			PeerURLs:  m.PeerURLs,
			IsLearner: m.IsLearner,
		},
		Members: membersToProtoMembers(membs),
	}, nil
}

func (cs *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	mc, err := cs.changer("member remove")
	if err != nil {
		return nil, err
	}
	membs, err := mc.RemoveMember(ctx, r.GetID())
	if err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MemberRemoveResponse{Header: cs.header(), Members: membersToProtoMembers(membs)}, nil
}

func (cs *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	mc, err := cs.changer("member update")
	if err != nil {
		return nil, err
	}
	m := kvstore.Member{
		ID:             types.ID(r.GetID()),
		RaftAttributes: membership.RaftAttributes{PeerURLs: r.GetPeerURLs()},
	}
	membs, err := mc.UpdateMember(ctx, m)
	if err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MemberUpdateResponse{Header: cs.header(), Members: membersToProtoMembers(membs)}, nil
}

func (cs *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	mc, err := cs.changer("member promote")
	if err != nil {
		return nil, err
	}
	membs, err := mc.PromoteMember(ctx, r.GetID())
	if err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MemberPromoteResponse{Header: cs.header(), Members: membersToProtoMembers(membs)}, nil
}

// header is etcd's cluster header: no revision, membership is not MVCC.
func (cs *clusterServer) header() *pb.ResponseHeader {
	h := &pb.ResponseHeader{}
	cs.hdr.fillWithoutRevision(h)
	return h
}

func membersToProtoMembers(membs []*kvstore.Member) []*pb.Member {
	out := make([]*pb.Member, 0, len(membs))
	for _, m := range membs {
		if m == nil {
			continue
		}
		out = append(out, &pb.Member{
			Name:       m.Name,
			ID:         uint64(m.ID),
			PeerURLs:   m.PeerURLs,
			ClientURLs: m.ClientURLs,
			IsLearner:  m.IsLearner,
		})
	}
	return out
}
