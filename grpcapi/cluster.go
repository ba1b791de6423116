package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/meshetcd/meshetcd/kvstore"
)

// clusterServer is etcd's Cluster service (v3rpc/member.go). Membership
// changes are not wired to kvstore yet and answer codes.Unimplemented.
type clusterServer struct {
	pb.UnimplementedClusterServer

	s   kvstore.API
	hdr header
}

func newClusterServer(s kvstore.API) *clusterServer {
	return &clusterServer{s: s, hdr: newHeader(s)}
}

// errMembershipChange is returned by the membership-changing RPCs until
// kvstore exposes conf changes.
func errMembershipChange(rpc string) error {
	return status.Errorf(codes.Unimplemented, "meshetcd: %s is not supported yet", rpc)
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
	// Bad URLs get etcd's error even before the feature exists, so scripts
	// see the same failure either way.
	if _, err := types.NewURLs(r.GetPeerURLs()); err != nil {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	return nil, errMembershipChange("member add")
}

func (cs *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return nil, errMembershipChange("member remove")
}

func (cs *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return nil, errMembershipChange("member update")
}

func (cs *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return nil, errMembershipChange("member promote")
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
