package kvstore

import (
	"testing"
	"time"

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
		if err := s.Raft().Propose(testCtx(t), data); err != nil {
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
