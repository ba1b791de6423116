package kvstore

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestRequestID(t *testing.T) {
	withHeader, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 77, Username: "u"}, Put: &pb.PutRequest{Key: []byte("k")}})
	withID, _ := proto.Marshal(&pb.InternalRaftRequest{ID: 5, Header: &pb.RequestHeader{ID: 77}})
	for _, tc := range []struct {
		name string
		data []byte
		want uint64
	}{
		{"header id", withHeader, 77},
		{"request id wins", withID, 5},
		{"empty", nil, 0},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0},
		{"truncated", withHeader[:len(withHeader)-2], 0},
	} {
		if got := requestID(tc.data); got != tc.want {
			t.Errorf("%s: requestID = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestRetriedRequestAppliedOnce commits the same request twice (a retry
// whose original was not lost after all): the second copy is skipped, also
// after a restart that reloads the records from the backend.
func TestRetriedRequestAppliedOnce(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(t, dir))
	data, err := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 0xabc}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	proposeAndSettle := func(s *Server) {
		t.Helper()
		if err := s.r.Propose(testCtx(t), data); err != nil {
			t.Fatal(err)
		}
		// A barrier write behind it: once it is applied, so is the copy.
		mustPut(t, s, "barrier", time.Now().String())
	}
	proposeAndSettle(s)
	rev := mustGet(t, s, "k").Kvs[0].ModRevision
	proposeAndSettle(s)
	r := mustGet(t, s, "k")
	if got := r.Kvs[0].ModRevision; got != rev || r.Kvs[0].Version != 1 {
		t.Fatalf("second copy applied: mod revision %d (want %d), version %d", got, rev, r.Kvs[0].Version)
	}
	s.Stop()

	s = startServer(t, testConfig(t, dir))
	defer s.Stop()
	proposeAndSettle(s)
	if r := mustGet(t, s, "k"); r.Kvs[0].ModRevision != rev || r.Kvs[0].Version != 1 {
		t.Fatalf("copy after restart applied: %+v", r.Kvs[0])
	}
}

// The proposal stamp is read back by requestInfo, and etcd's own unmarshal
// (what apply.Apply does) still sees the request unchanged.
func TestProposedAtStamp(t *testing.T) {
	plain, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 77}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	stamped := appendProposedAt(append([]byte(nil), plain...), 4242)
	if id, at := requestInfo(stamped); id != 77 || at != 4242 {
		t.Fatalf("requestInfo = %d, %d; want 77, 4242", id, at)
	}
	if id, at := requestInfo(plain); id != 77 || at != 0 {
		t.Fatalf("unstamped requestInfo = %d, %d; want 77, 0", id, at)
	}
	var r pb.InternalRaftRequest
	if err := proto.Unmarshal(stamped, &r); err != nil || r.Header.ID != 77 || string(r.Put.Key) != "k" || string(r.Put.Value) != "v" {
		t.Fatalf("etcd's unmarshal of a stamped request: %v, %+v", err, &r)
	}
}

// A copy committed more than dedupeWindow entries after its stamp is
// refused whatever the records say (the original's record may be pruned);
// one at the edge of the window is applied (and recorded) normally.
func TestStaleCopyRefused(t *testing.T) {
	s := &Server{lg: zap.NewNop(), dd: dedupe{seen: map[uint64]uint64{}}}
	plain, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 9}, Put: &pb.PutRequest{Key: []byte("k")}})
	const stamp = 1000
	data := appendProposedAt(plain, stamp)
	if !s.isDuplicate(data, stamp+dedupeWindow+1) {
		t.Fatal("a copy committed past the window was not refused")
	}
	if s.dd.pendingID != 0 {
		t.Fatal("a refused copy was marked to be recorded")
	}
	if s.isDuplicate(data, stamp+dedupeWindow) {
		t.Fatal("a copy at the edge of the window was refused")
	}
	if s.dd.pendingID != 9 {
		t.Fatalf("pending id = %d, want 9", s.dd.pendingID)
	}
	// Unstamped entries (written before the stamp existed) are never stale.
	s.dd.pendingID = 0
	if s.isDuplicate(plain, stamp+10*dedupeWindow) {
		t.Fatal("an unstamped entry was refused")
	}
}
