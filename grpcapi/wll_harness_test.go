package grpcapi

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/coreos/go-semver/semver"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshetcd/meshetcd/kvstore"
)

// Test harness for the Watch/Lease/Lock tests: one member behind a real gRPC
// listener on loopback, driven by clientv3.
//
// Until kvstore.Server exists this uses a bare mvcc store (wllFakeStore); the
// writes then go straight to mvcc instead of through the KV service.

// wllTimeout bounds every wait in these tests; generous for a loaded 2-core
// machine, and only ever reached when a test fails.
const wllTimeout = 30 * time.Second

type testEnv struct {
	t      testing.TB
	s      kvstore.API
	fake   *wllFakeStore
	client *clientv3.Client
	addr   string
}

type envOptions struct {
	progressInterval time.Duration
	maxRequestBytes  uint
}

func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	fs := newWLLFakeStore(t, lg)
	gs := grpc.NewServer()
	if o.maxRequestBytes == 0 {
		o.maxRequestBytes = DefaultMaxRequestBytes
	}
	ws := newWatchServer(lg, fs, newWatchConfig(lg, o.maxRequestBytes, o.progressInterval))
	pb.RegisterWatchServer(gs, ws)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-served
	})

	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{ln.Addr().String()},
		DialTimeout: wllTimeout,
		Logger:      lg,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testEnv{t: t, s: fs, fake: fs, client: c, addr: ln.Addr().String()}
}

func (e *testEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wllTimeout)
	e.t.Cleanup(cancel)
	return ctx
}

// put writes key=val and returns the new revision.
func (e *testEnv) put(key, val string) int64 {
	e.t.Helper()
	return e.fake.kv.Put([]byte(key), []byte(val), lease.NoLease)
}

// del deletes one key and returns the revision.
func (e *testEnv) del(key string) int64 {
	e.t.Helper()
	_, rev := e.fake.kv.DeleteRange([]byte(key), nil)
	return rev
}

func (e *testEnv) compact(rev int64) {
	e.t.Helper()
	done, err := e.fake.kv.Compact(traceutil.TODO(), rev)
	if err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(wllTimeout):
		e.t.Fatal("compaction did not finish")
	}
}

// wllFakeStore is just enough of kvstore.API for the Watch service.
type wllFakeStore struct {
	kvstore.API // nil: any other method panics, which a test would notice
	kv          mvcc.WatchableKV
	as          wllFakeAuthStore
}

type wllFakeCluster struct{}

func (wllFakeCluster) Version() *semver.Version { return semver.New("3.7.0") }

func newWLLFakeStore(t testing.TB, lg *zap.Logger) *wllFakeStore {
	bcfg := backend.DefaultBackendConfig(lg)
	bcfg.Path = t.TempDir() + "/db"
	be := backend.New(bcfg)
	le := lease.NewLessor(lg, be, wllFakeCluster{}, lease.LessorConfig{MinLeaseTTL: 1})
	kv := mvcc.New(lg, be, le, mvcc.StoreConfig{})
	t.Cleanup(func() {
		kv.Close()
		le.Stop()
		be.Close()
	})
	return &wllFakeStore{kv: kv}
}

func (f *wllFakeStore) KV() mvcc.WatchableKV      { return f.kv }
func (f *wllFakeStore) ClusterID() types.ID       { return 0x1000 }
func (f *wllFakeStore) MemberID() types.ID        { return 0x2000 }
func (f *wllFakeStore) Term() uint64              { return 2 }
func (f *wllFakeStore) AuthStore() auth.AuthStore { return f.as }
func (f *wllFakeStore) AuthInfoFromCtx(context.Context) (*auth.AuthInfo, error) {
	return nil, nil
}

type wllFakeAuthStore struct{ auth.AuthStore }

func (wllFakeAuthStore) IsRangePermitted(*auth.AuthInfo, []byte, []byte) error { return nil }
