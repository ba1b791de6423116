package grpcapi

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshetcd/meshetcd/kvstore"
)

// Test harness for the Watch/Lease/Lock tests: a real single-member
// kvstore in a temp dir, served by NewGRPCServer + Serve on a loopback
// listener, driven by clientv3.

// wllTimeout bounds every wait in these tests; generous for a loaded 2-core
// machine, and only ever reached when a test fails.
const wllTimeout = 30 * time.Second

type testEnv struct {
	t      testing.TB
	s      *kvstore.Server
	client *clientv3.Client
	addr   string
}

type envOptions struct {
	progressInterval time.Duration
}

func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx, cancel := context.WithTimeout(context.Background(), wllTimeout)
	defer cancel()
	dir := t.TempDir()
	// etcd warns about a data dir readable by others; keep logs clean.
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := kvstore.New(ctx, kvstore.Config{
		Logger:        lg,
		DataDir:       dir,
		UnsafeNoFsync: true,
		// A one-member cluster elects itself after one election timeout;
		// keep that short. The minimum lease TTL follows (1s).
		HeartbeatInterval: 20 * time.Millisecond,
		ElectionTimeout:   200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	select {
	case <-s.ReadyNotify():
	case <-ctx.Done():
		t.Fatal("kvstore not ready")
	}

	cfg := Config{Logger: lg, WatchProgressNotifyInterval: o.progressInterval}
	gs := NewGRPCServer(s, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(sctx, ln, gs, NewHTTPHandler(s, cfg)) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	c := newWLLClient(t, ln.Addr().String(), lg)
	return &testEnv{t: t, s: s, client: c, addr: ln.Addr().String()}
}

func newWLLClient(t testing.TB, addr string, lg *zap.Logger) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: wllTimeout,
		Logger:      lg,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wllTimeout)
	e.t.Cleanup(cancel)
	return ctx
}

// put writes key=val and returns the new revision.
func (e *testEnv) put(key, val string) int64 {
	e.t.Helper()
	r, err := e.client.Put(e.ctx(), key, val)
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
	return r.Header.Revision
}

// del deletes one key and returns the revision.
func (e *testEnv) del(key string) int64 {
	e.t.Helper()
	r, err := e.client.Delete(e.ctx(), key)
	if err != nil {
		e.t.Fatalf("delete %s: %v", key, err)
	}
	return r.Header.Revision
}

// compact compacts physically, so the result is visible to watchers at once.
func (e *testEnv) compact(rev int64) {
	e.t.Helper()
	if _, err := e.client.Compact(e.ctx(), rev, clientv3.WithCompactPhysical()); err != nil {
		e.t.Fatalf("compact %d: %v", rev, err)
	}
}
