package kvstore

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
)

// waitTimeout is generous: tests share two cores with other work.
const waitTimeout = 30 * time.Second

func testConfig(t testing.TB, dir string) Config {
	t.Helper()
	return Config{
		Logger:            zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		DataDir:           dir,
		HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout:   100 * time.Millisecond,
	}
}

// startServer starts a member and waits until it is ready.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	select {
	case <-s.ReadyNotify():
	case <-ctx.Done():
		s.Stop()
		t.Fatalf("member not ready within %v", waitTimeout)
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t testing.TB, s *Server, key, val string) *pb.PutResponse {
	t.Helper()
	resp, err := s.Put(testCtx(t), &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return resp
}

func mustGet(t testing.TB, s *Server, key string) *pb.RangeResponse {
	t.Helper()
	resp, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte(key)})
	if err != nil {
		t.Fatalf("Range(%q): %v", key, err)
	}
	return resp
}

func mustURLsMap(t testing.TB, s string) types.URLsMap {
	t.Helper()
	m, err := types.NewURLsMap(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
