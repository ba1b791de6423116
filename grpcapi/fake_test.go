package grpcapi

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"

	"github.com/meshetcd/meshetcd/kvstore"
)

// fakeStore is a kvstore.API for grpcapi's own tests: etcd's real MVCC store
// on a temporary bbolt backend, driven directly with etcd's txn package (no
// raft), plus settable leader/learner/alarm state. It lets the services be
// tested end to end with clientv3 without depending on kvstore's progress.
// Calls to parts of the API it does not implement (leases, auth RPCs)
// panic, which fails the test that made them.
type fakeStore struct {
	kvstore.API // nil: unimplemented methods panic

	lg     *zap.Logger
	be     backend.Backend
	kv     mvcc.WatchableKV
	lessor lease.Lessor

	leader  atomic.Uint64
	learner atomic.Bool
	term    atomic.Uint64

	quota     int64 // QuotaBackendBytes reported by Config; set before serving
	maxTxnOps uint  // MaxTxnOps reported by Config (0: etcd's default)

	mu      sync.Mutex
	alarms  []*pb.AlarmMember
	members []*kvstore.Member

	ready chan struct{}
	stop  chan struct{}
}

const (
	fakeMemberID  = 0x1234
	fakeClusterID = 0xc1
)

func newFakeStore(t testing.TB) *fakeStore {
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	be := backend.NewDefaultBackend(lg, filepath.Join(t.TempDir(), "db"))
	lessor := &lease.FakeLessor{}
	kv := mvcc.New(lg, be, lessor, mvcc.StoreConfig{})
	f := &fakeStore{
		lg: lg, be: be, kv: kv, lessor: lessor,
		ready: make(chan struct{}),
		stop:  make(chan struct{}),
		members: []*kvstore.Member{{
			ID: fakeMemberID,
		}},
	}
	f.members[0].Name = "default"
	f.members[0].PeerURLs = []string{"http://127.0.0.1:2380"}
	f.members[0].ClientURLs = []string{"http://127.0.0.1:2379"}
	f.leader.Store(fakeMemberID)
	f.term.Store(2)
	close(f.ready)
	t.Cleanup(func() {
		close(f.stop)
		kv.Close()
		if err := be.Close(); err != nil {
			t.Errorf("closing backend: %v", err)
		}
	})
	return f
}

func (f *fakeStore) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp, _, err := txn.Range(ctx, f.lg, f.kv, r, true)
	return resp, err
}

func (f *fakeStore) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	resp, _, err := txn.Put(ctx, f.lg, f.lessor, f.kv, r)
	return resp, err
}

func (f *fakeStore) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, _, err := txn.DeleteRange(ctx, f.lg, f.kv, r)
	return resp, err
}

func (f *fakeStore) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	resp, _, err := txn.Txn(ctx, f.lg, r, false, f.kv, f.lessor, false)
	return resp, err
}

func (f *fakeStore) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	done, err := f.kv.Compact(traceutil.TODO(), r.Revision)
	if err != nil {
		return nil, err
	}
	if r.Physical {
		<-done
	}
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: f.kv.Rev()}}, nil
}

func (f *fakeStore) MemberID() types.ID     { return fakeMemberID }
func (f *fakeStore) ClusterID() types.ID    { return fakeClusterID }
func (f *fakeStore) Leader() types.ID       { return types.ID(f.leader.Load()) }
func (f *fakeStore) Term() uint64           { return f.term.Load() }
func (f *fakeStore) CommittedIndex() uint64 { return 10 }
func (f *fakeStore) AppliedIndex() uint64   { return 9 }
func (f *fakeStore) IsLearner() bool        { return f.learner.Load() }
func (f *fakeStore) Members() []*kvstore.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.members
}
func (f *fakeStore) KV() mvcc.WatchableKV      { return f.kv }
func (f *fakeStore) Backend() backend.Backend  { return f.be }
func (f *fakeStore) AuthStore() auth.AuthStore { return fakeAuthStore{} }
func (f *fakeStore) AuthInfoFromCtx(context.Context) (*auth.AuthInfo, error) {
	return nil, nil
}

func (f *fakeStore) Alarms() []*pb.AlarmMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.AlarmMember(nil), f.alarms...)
}

func (f *fakeStore) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Action {
	case pb.AlarmRequest_ACTIVATE:
		f.alarms = append(f.alarms, &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm})
	case pb.AlarmRequest_DEACTIVATE:
		f.alarms = nil
	}
	return &pb.AlarmResponse{Header: &pb.ResponseHeader{}, Alarms: append([]*pb.AlarmMember(nil), f.alarms...)}, nil
}

func (f *fakeStore) Defragment() error { return f.be.Defrag() }
func (f *fakeStore) MoveLeader(ctx context.Context, lead, target uint64) error {
	return nil
}
func (f *fakeStore) Config() kvstore.Config {
	maxTxnOps := f.maxTxnOps
	if maxTxnOps == 0 {
		maxTxnOps = DefaultMaxTxnOps
	}
	return kvstore.Config{
		Name: "default", MaxRequestBytes: DefaultMaxRequestBytes, MaxTxnOps: maxTxnOps,
		QuotaBackendBytes: f.quota, ElectionTimeout: time.Second,
	}
}
func (f *fakeStore) ReadyNotify() <-chan struct{}                     { return f.ready }
func (f *fakeStore) StopNotify() <-chan struct{}                      { return f.stop }
func (f *fakeStore) LinearizableReadNotify(ctx context.Context) error { return nil }

func (f *fakeStore) setAlarm(a pb.AlarmType) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.alarms = append(f.alarms, &pb.AlarmMember{MemberID: fakeMemberID, Alarm: a})
}

// fakeAuthStore is an auth store with auth disabled.
type fakeAuthStore struct {
	auth.AuthStore // nil: unimplemented methods panic
}

func (fakeAuthStore) IsAuthEnabled() bool                          { return false }
func (fakeAuthStore) IsAdminPermitted(*auth.AuthInfo) error        { return nil }
func (fakeAuthStore) WithRoot(ctx context.Context) context.Context { return ctx }
func (fakeAuthStore) IsRangePermitted(*auth.AuthInfo, []byte, []byte) error {
	return nil
}
func (fakeAuthStore) Revision() uint64 { return 0 }
