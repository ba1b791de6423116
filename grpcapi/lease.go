package grpcapi

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/lease"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/kvstore"
)

// The Lease service is etcd 3.7.3's v3rpc.LeaseServer over kvstore.Lessor:
// the state changes (grant, revoke) and the leader-only renewals live in
// kvstore; this layer adds headers, maps errors to rpctypes and runs the
// keepalive stream.

type leaseServer struct {
	pb.UnimplementedLeaseServer

	lg  *zap.Logger
	s   kvstore.API
	hdr header
}

func newLeaseServer(lg *zap.Logger, s kvstore.API) *leaseServer {
	return &leaseServer{lg: lg, s: s, hdr: newHeader(s)}
}

// LeaseGrant is etcd's quota lease server: a grant that would push the
// backend over its quota raises the NOSPACE alarm and fails with
// ErrGRPCNoSpace before anything is proposed.
func (ls *leaseServer) LeaseGrant(ctx context.Context, cr *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := checkQuota(ctx, ls.s, ls.lg, "lease", cr); err != nil {
		return nil, err
	}
	resp, err := ls.s.LeaseGrant(ctx, cr)
	if err != nil {
		return nil, togRPCError(err)
	}
	ls.hdr.fill(resp.Header)
	return resp, nil
}

func (ls *leaseServer) LeaseRevoke(ctx context.Context, rr *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	resp, err := ls.s.LeaseRevoke(ctx, rr)
	if err != nil {
		return nil, togRPCError(err)
	}
	ls.hdr.fill(resp.Header)
	return resp, nil
}

// LeaseTimeToLive answers an unknown lease with TTL -1 rather than an error,
// which is what etcdctl and clientv3 expect from etcd.
func (ls *leaseServer) LeaseTimeToLive(ctx context.Context, rr *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	resp, err := ls.s.LeaseTimeToLive(ctx, rr)
	if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) {
		return nil, togRPCError(err)
	}
	if errors.Is(err, lease.ErrLeaseNotFound) {
		resp = &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: rr.ID, TTL: -1}
	}
	ls.hdr.fill(resp.Header)
	return resp, nil
}

func (ls *leaseServer) LeaseLeases(ctx context.Context, rr *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	resp, err := ls.s.LeaseLeases(ctx, rr)
	if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) {
		return nil, togRPCError(err)
	}
	if errors.Is(err, lease.ErrLeaseNotFound) {
		resp = &pb.LeaseLeasesResponse{Header: &pb.ResponseHeader{}, Leases: []*pb.LeaseStatus{}}
	}
	ls.hdr.fill(resp.Header)
	return resp, nil
}

// LeaseKeepAlive serves one keepalive stream. The receive/renew/send loop
// runs on its own goroutine so that the handler can return as soon as the
// stream's context ends (client gone, leader lost, server stopping) even if
// a renewal is still waiting; that goroutine then ends because Recv, Send
// and LeaseRenew all fail once gRPC tears the stream down.
func (ls *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	errc := make(chan error, 1) // buffered: the loop never blocks on exit
	go func() { errc <- ls.leaseKeepAlive(stream) }()
	select {
	case err := <-errc:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

func (ls *leaseServer) leaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			ls.logStreamErr(stream.Context(), "failed to receive lease keepalive request from gRPC stream", err)
			return err
		}

		// The header is taken before renewing so that its revision is <=
		// the revision at which the renewal happened: a client must never
		// see a successful keepalive at a revision after the lease's revoke.
		resp := &pb.LeaseKeepAliveResponse{ID: req.ID, Header: &pb.ResponseHeader{}}
		ls.hdr.fill(resp.Header)

		ttl, err := ls.s.LeaseRenew(stream.Context(), lease.LeaseID(req.ID))
		if errors.Is(err, lease.ErrLeaseNotFound) {
			// Unknown or expired lease: TTL 0 on the stream, which clientv3
			// turns into "lease expired", not a stream error.
			err, ttl = nil, 0
		}
		if err != nil {
			return togRPCError(err)
		}

		resp.TTL = ttl
		if err := stream.Send(resp); err != nil {
			ls.logStreamErr(stream.Context(), "failed to send lease keepalive response to gRPC stream", err)
			return err
		}
	}
}

func (ls *leaseServer) logStreamErr(ctx context.Context, msg string, err error) {
	if isClientCtxErr(ctx.Err(), err) {
		ls.lg.Debug(msg, zap.Error(err))
		return
	}
	ls.lg.Warn(msg, zap.Error(err))
}
