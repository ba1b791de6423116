package grpcapi

import (
	"context"

	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/storage"

	"github.com/meshetcd/meshetcd/kvstore"
)

// checkQuota is etcd's quotaAlarmer.check (v3rpc/quota.go): a write that
// would push the backend past --quota-backend-bytes is refused with
// ErrGRPCNoSpace and raises the NOSPACE alarm. r is a *pb.PutRequest,
// *pb.TxnRequest or *pb.LeaseGrantRequest; name labels the quota in the one
// log line etcd's storage package writes ("kv" or "lease").
//
// The quota is rebuilt per call because the backend can be swapped by a
// snapshot install; building it is a struct allocation.
func checkQuota(ctx context.Context, s kvstore.Info, lg *zap.Logger, name string, r any) error {
	q := storage.NewBackendQuota(lg, s.Config().QuotaBackendBytes, s.Backend(), name)
	if q.Available(r) {
		return nil
	}
	req := &pb.AlarmRequest{
		MemberID: uint64(s.MemberID()),
		Action:   pb.AlarmRequest_ACTIVATE,
		Alarm:    pb.AlarmType_NOSPACE,
	}
	if _, err := s.Alarm(ctx, req); err != nil {
		lg.Warn("failed to raise NOSPACE alarm", zap.String("quota-name", name), zap.Error(err))
	}
	return rpctypes.ErrGRPCNoSpace
}
