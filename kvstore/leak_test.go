package kvstore

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestStopLeavesNoGoroutines checks that Stop owns and ends every goroutine
// a member starts (raft, apply, read loop, lessor, mvcc, purge, leases).
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := testConfig(t, t.TempDir())
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	s := startServer(t, cfg)
	ctx := testCtx(t)
	l, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k"), Lease: l.ID}); err != nil {
		t.Fatal(err)
	}
	ws := s.KV().NewWatchStream()
	ws.Close()
	s.Stop()

	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines before, %d after Stop:\n%s", before, runtime.NumGoroutine(), trimStacks(string(buf[:n])))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trimStacks drops the test's own goroutines from a dump.
func trimStacks(dump string) string {
	var keep []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "testing.") && !strings.Contains(g, "meshetcd") {
			continue
		}
		keep = append(keep, g)
	}
	return strings.Join(keep, "\n\n")
}

// TestStopWithUndrainedDatabaseSnapshot: a transport that never reads a
// snapshot stream must not make Stop hang.
func TestStopWithUndrainedDatabaseSnapshot(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	rc, size, err := applier{s}.DatabaseSnapshot()
	if err != nil || size <= 0 {
		t.Fatalf("DatabaseSnapshot = %d bytes, %v", size, err)
	}
	stopped := make(chan struct{})
	go func() {
		s.Stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop hung on an undrained snapshot stream")
	}
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("reading a snapshot cut short by Stop reported no error")
	}
}
