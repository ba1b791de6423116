package grpcapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"time"

	"github.com/coreos/go-semver/semver"
	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	etcderr "go.etcd.io/etcd/server/v3/etcdserver/errors"
	serverversion "go.etcd.io/etcd/server/v3/etcdserver/version"
	"go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/raft/v3"

	"github.com/meshetcd/meshetcd/kvstore"
)

// maintenanceServer is etcd's Maintenance service (v3rpc/maintenance.go)
// including its admin checks (authMaintenanceServer).
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer

	s   kvstore.API
	hdr header
	lg  *zap.Logger
}

func newMaintenanceServer(s kvstore.API, cfg Config) *maintenanceServer {
	return &maintenanceServer{s: s, hdr: newHeader(s), lg: cfg.Logger}
}

func (ms *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := isAdminPermitted(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	ms.lg.Info("starting defragment")
	if err := ms.s.Defragment(); err != nil {
		ms.lg.Warn("failed to defragment", zap.Error(err))
		return nil, togRPCError(err)
	}
	ms.lg.Info("finished defragment")
	return &pb.DefragmentResponse{}, nil
}

// snapshotSendBufferSize holds more than one OS page per message (etcd's
// value).
const snapshotSendBufferSize = 32 * 1024

// Snapshot streams the backend in chunks with RemainingBytes counting down,
// then one message whose Blob is the sha256 of everything sent: etcdctl
// snapshot save checks it, and snapshot restore verifies it.
func (ms *maintenanceServer) Snapshot(r *pb.SnapshotRequest, srv pb.Maintenance_SnapshotServer) error {
	if err := isAdminPermitted(srv.Context(), ms.s); err != nil {
		return togRPCError(err)
	}
	be := ms.s.Backend()
	storageVersion := ""
	if v := schema.ReadStorageVersion(be.ReadTx()); v != nil {
		storageVersion = v.String()
	}
	snap := be.Snapshot()
	pr, pw := io.Pipe()

	// The writer goroutine belongs to this call: closing pr makes its
	// pending write fail, and we wait for it before returning.
	written := make(chan struct{})
	defer func() {
		pr.Close()
		<-written
	}()
	go func() {
		defer close(written)
		_, err := snap.WriteTo(pw)
		if cerr := snap.Close(); cerr != nil {
			ms.lg.Warn("failed to close snapshot", zap.Error(cerr))
		}
		pw.CloseWithError(err) // nil closes with io.EOF
	}()

	h := sha256.New()
	sent := int64(0)
	total := snap.Size()
	start := time.Now()
	ms.lg.Info("sending database snapshot to client",
		zap.Int64("total-bytes", total),
		zap.String("storage-version", storageVersion))
	for total-sent > 0 {
		// A fresh buffer per message: Send may still hold the previous one.
		buf := make([]byte, snapshotSendBufferSize)
		n, err := io.ReadFull(pr, buf)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return togRPCError(err)
		}
		if n == 0 {
			// The snapshot ended before its announced size: fail rather than
			// spin or send a digest of a truncated file.
			return togRPCError(io.ErrUnexpectedEOF)
		}
		sent += int64(n)
		resp := &pb.SnapshotResponse{
			RemainingBytes: uint64(total - sent),
			Blob:           buf[:n],
			Version:        storageVersion,
		}
		if err := srv.Send(resp); err != nil {
			return togRPCError(err)
		}
		h.Write(buf[:n])
	}

	sha := h.Sum(nil)
	ms.lg.Info("sending database sha256 checksum to client",
		zap.Int64("total-bytes", total),
		zap.Int("checksum-size", len(sha)))
	if err := srv.Send(&pb.SnapshotResponse{RemainingBytes: 0, Blob: sha, Version: storageVersion}); err != nil {
		return togRPCError(err)
	}
	ms.lg.Info("successfully sent database snapshot to client",
		zap.Int64("total-bytes", total),
		zap.Duration("took", time.Since(start)),
		zap.String("storage-version", storageVersion))
	return nil
}

func (ms *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := isAdminPermitted(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	h, rev, err := ms.s.KV().HashStorage().Hash()
	if err != nil {
		return nil, togRPCError(err)
	}
	resp := &pb.HashResponse{Header: &pb.ResponseHeader{Revision: rev}, Hash: h}
	ms.hdr.fill(resp.Header)
	return resp, nil
}

func (ms *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := isAdminPermitted(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	h, rev, err := ms.s.KV().HashStorage().HashByRev(r.GetRevision())
	if err != nil {
		return nil, togRPCError(err)
	}
	resp := &pb.HashKVResponse{
		Header:          &pb.ResponseHeader{Revision: rev},
		Hash:            h.Hash,
		CompactRevision: h.CompactRevision,
		HashRevision:    h.Revision,
	}
	ms.hdr.fill(resp.Header)
	return resp, nil
}

func (ms *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	// Listing alarms needs any authenticated user; changing them needs root.
	var err error
	if r.GetAction() == pb.AlarmRequest_GET {
		err = requireAuthInfo(ctx, ms.s)
	} else {
		err = isAdminPermitted(ctx, ms.s)
	}
	if err != nil {
		return nil, togRPCError(err)
	}
	resp, err := ms.s.Alarm(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ms.hdr.fill(resp.Header)
	return resp, nil
}

func (ms *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := requireAuthInfo(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	hdr := &pb.ResponseHeader{}
	ms.hdr.fill(hdr)
	be := ms.s.Backend()
	resp := &pb.StatusResponse{
		Header:           hdr,
		Version:          version.Version,
		Leader:           uint64(ms.s.Leader()),
		RaftIndex:        ms.s.CommittedIndex(),
		RaftAppliedIndex: ms.s.AppliedIndex(),
		RaftTerm:         ms.s.Term(),
		DbSize:           be.Size(),
		DbSizeInUse:      be.SizeInUse(),
		IsLearner:        ms.s.IsLearner(),
		DbSizeQuota:      ms.s.Config().QuotaBackendBytes,
		DowngradeInfo:    &pb.DowngradeInfo{Enabled: false},
	}
	if resp.DbSizeQuota == 0 {
		resp.DbSizeQuota = storage.DefaultQuotaBytes
	}
	if v := schema.ReadStorageVersion(be.ReadTx()); v != nil {
		resp.StorageVersion = v.String()
	}
	if resp.Leader == raft.None {
		resp.Errors = append(resp.Errors, etcderr.ErrNoLeader.Error())
	}
	for _, a := range ms.s.Alarms() {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

func (ms *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := isAdminPermitted(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	leader := ms.s.Leader()
	if ms.s.MemberID() != leader {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if err := ms.s.MoveLeader(ctx, uint64(leader), r.GetTargetID()); err != nil {
		return nil, togRPCError(err)
	}
	return &pb.MoveLeaderResponse{}, nil
}

// Downgrade answers like an etcd cluster that has nowhere to downgrade to:
// meshetcd runs one storage version, so no target is valid (version format
// errors come first, as in etcd) and there is never a downgrade in
// progress. CANCEL then succeeds with the cluster version, because etcd
// 3.7.3 only logs the "no inflight downgrade" error and answers success.
func (ms *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := isAdminPermitted(ctx, ms.s); err != nil {
		return nil, togRPCError(err)
	}
	switch r.GetAction() {
	case pb.DowngradeRequest_VALIDATE, pb.DowngradeRequest_ENABLE:
		if _, err := parseDowngradeVersion(r.GetVersion()); err != nil {
			return nil, togRPCError(err)
		}
		return nil, togRPCError(serverversion.ErrInvalidDowngradeTargetVersion)
	case pb.DowngradeRequest_CANCEL:
		if err := ms.s.LinearizableReadNotify(ctx); err != nil {
			return nil, togRPCError(err)
		}
		ms.lg.Warn("failed to cancel downgrade", zap.Error(serverversion.ErrNoInflightDowngrade))
		resp := &pb.DowngradeResponse{Header: &pb.ResponseHeader{}, Version: version.Cluster(version.Version)}
		ms.hdr.fill(resp.Header)
		return resp, nil
	default:
		return nil, togRPCError(etcderr.ErrUnknownMethod)
	}
}

// parseDowngradeVersion accepts "X.Y.Z" or "X.Y" like etcd's
// convertToClusterVersion.
func parseDowngradeVersion(v string) (*semver.Version, error) {
	ver, err := semver.NewVersion(v)
	if err != nil {
		ver, err = semver.NewVersion(v + ".0")
		if err != nil {
			return nil, etcderr.ErrWrongDowngradeVersionFormat
		}
	}
	return &semver.Version{Major: ver.Major, Minor: ver.Minor}, nil
}
