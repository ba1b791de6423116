package grpcapi

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/meshetcd/meshetcd/kvstore"
)

// The Lock and Election services are etcd's own v3lock/v3election servers.
// They only need a *clientv3.Client; like etcd's v3client.New we build one
// that calls our KV, Lease and Watch servers in-process through the
// grpcproxy adapter (no socket, no TLS, and the caller's context — with its
// auth token metadata — reaches our servers unchanged).

// lockElection owns the in-process client behind the Lock and Election
// services. Close stops the client's watch and lease goroutines.
type lockElection struct {
	client   *clientv3.Client
	lock     v3lockpb.LockServer
	election v3electionpb.ElectionServer
}

// inProcessKeepAliveTimeout is how long the in-process lease client waits
// for a keepalive answer before giving up on a lease; etcd's v3client uses
// one second, which is plenty without a network in between.
const inProcessKeepAliveTimeout = time.Second

func newLockElection(lg *zap.Logger, kv pb.KVServer, le pb.LeaseServer, w pb.WatchServer) *lockElection {
	// Background, not a request context: the client outlives every RPC and
	// is stopped by Close.
	c := clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(lg))
	c.KV = clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(kv), c)
	c.Lease = clientv3.NewLeaseFromLeaseClient(adapter.LeaseServerToLeaseClient(le), c, inProcessKeepAliveTimeout)
	c.Watcher = clientv3.NewWatchFromWatchClient(adapter.WatchServerToWatchClient(w), c)
	return &lockElection{
		client:   c,
		lock:     v3lock.NewLockServer(c),
		election: v3election.NewElectionServer(c),
	}
}

// registerLockElection registers the Lock and Election services on gs. The
// in-process client lives as long as the member: it is closed when s stops
// (the goroutine waiting for that is owned by s, like the health tracker).
func registerLockElection(gs *grpc.Server, s kvstore.Info, lg *zap.Logger, kv pb.KVServer, le pb.LeaseServer, w pb.WatchServer) {
	l := newLockElection(lg, kv, le, w)
	l.register(gs)
	go func() {
		<-s.StopNotify()
		if err := l.Close(); err != nil {
			lg.Warn("failed to close in-process lock/election client", zap.Error(err))
		}
	}()
}

func (l *lockElection) register(gs *grpc.Server) {
	v3lockpb.RegisterLockServer(gs, l.lock)
	v3electionpb.RegisterElectionServer(gs, l.election)
}

// Close stops the in-process client. Campaigns and locks in flight fail
// with a canceled context.
func (l *lockElection) Close() error {
	err := l.client.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
