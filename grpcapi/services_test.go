package grpcapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"

	"github.com/meshetcd/meshetcd/kvstore"
)

// testTimeout bounds every client call: generous, because the machine is
// shared and loaded; nothing here should take more than milliseconds.
const testTimeout = 20 * time.Second

// serveForTest serves api on a loopback listener with Serve and returns the
// address. Cleanup cancels Serve and fails the test if it does not return.
func serveForTest(t testing.TB, api kvstore.API, cfg Config) string {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := NewGRPCServer(api, cfg)
	h := NewHTTPHandler(api, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, gs, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after cancel", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return l.Addr().String()
}

func dialClient(t testing.TB, addr string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: testTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantWireError checks that err is exactly etcd's wire error want (same code
// and message), whatever the client wrapped it in.
func wantWireError(t *testing.T, what string, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, want)
	}
	// clientv3 turns known wire errors into rpctypes.EtcdError values.
	var code codes.Code
	var msg string
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code, msg = ee.Code(), ee.Error()
	} else {
		st := status.Convert(err)
		code, msg = st.Code(), st.Message()
	}
	ws := status.Convert(want)
	if code != ws.Code() || msg != ws.Message() {
		t.Fatalf("%s: got (%v, %q), want (%v, %q)", what, code, msg, ws.Code(), ws.Message())
	}
}

func checkFakeHeader(t *testing.T, h *pb.ResponseHeader, rev int64) {
	t.Helper()
	if h == nil {
		t.Fatal("nil header")
	}
	if h.ClusterId != fakeClusterID || h.MemberId != fakeMemberID || h.RaftTerm != 2 {
		t.Fatalf("header ids: %+v", h)
	}
	if rev != 0 && h.Revision != rev {
		t.Fatalf("header revision %d, want %d", h.Revision, rev)
	}
}

func TestKVRoundTrip(t *testing.T) {
	f := newFakeStore(t)
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)

	pr, err := cli.Put(ctx, "a", "1")
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, pr.Header, 2)
	if _, err := cli.Put(ctx, "b", "2"); err != nil {
		t.Fatal(err)
	}
	gr, err := cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, gr.Header, 3)
	if gr.Count != 2 || string(gr.Kvs[0].Value) != "1" || gr.Kvs[1].ModRevision != 3 {
		t.Fatalf("get: %+v", gr)
	}
	dr, err := cli.Delete(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, dr.Header, 4)
	if dr.Deleted != 1 {
		t.Fatalf("deleted %d", dr.Deleted)
	}
	tr, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version("b"), "=", 1)).
		Then(clientv3.OpPut("c", "3"), clientv3.OpGet("b")).
		Else(clientv3.OpPut("d", "4")).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, tr.Header, 5)
	if !tr.Succeeded || string(tr.Responses[1].GetResponseRange().Kvs[0].Value) != "2" {
		t.Fatalf("txn: %+v", tr)
	}
	// A read at an old revision reports it in the header? No: etcd reports
	// the store's current revision, and so must we.
	old, err := cli.Get(ctx, "a", clientv3.WithRev(2))
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, old.Header, 5)
	if len(old.Kvs) != 1 || string(old.Kvs[0].Value) != "1" {
		t.Fatalf("get at rev 2: %+v", old)
	}

	cr, err := cli.Compact(ctx, 4, clientv3.WithCompactPhysical())
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, cr.Header, 5)
	_, err = cli.Get(ctx, "a", clientv3.WithRev(2))
	wantWireError(t, "get compacted revision", err, rpctypes.ErrGRPCCompacted)
	_, err = cli.Get(ctx, "a", clientv3.WithRev(100))
	wantWireError(t, "get future revision", err, rpctypes.ErrGRPCFutureRev)
	_, err = cli.Compact(ctx, 3)
	wantWireError(t, "compact below compacted", err, rpctypes.ErrGRPCCompacted)
	_, err = cli.Compact(ctx, 100)
	wantWireError(t, "compact future", err, rpctypes.ErrGRPCFutureRev)
}

func TestKVValidationErrors(t *testing.T) {
	f := newFakeStore(t)
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)
	// The raw client: clientv3 validates some things itself, and the point
	// is what the server answers.
	kv := pb.NewKVClient(cli.ActiveConnection())

	_, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")})
	wantWireError(t, "put empty key", err, rpctypes.ErrGRPCEmptyKey)
	_, err = kv.Range(ctx, &pb.RangeRequest{})
	wantWireError(t, "range empty key", err, rpctypes.ErrGRPCEmptyKey)
	_, err = kv.DeleteRange(ctx, &pb.DeleteRangeRequest{})
	wantWireError(t, "delete empty key", err, rpctypes.ErrGRPCEmptyKey)
	_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: 7})
	wantWireError(t, "range bad sort", err, rpctypes.ErrGRPCInvalidSortOption)
	_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true})
	wantWireError(t, "put ignore value", err, rpctypes.ErrGRPCValueProvided)
	_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Lease: 7, IgnoreLease: true})
	wantWireError(t, "put ignore lease", err, rpctypes.ErrGRPCLeaseProvided)

	_, err = cli.Txn(ctx).Then(clientv3.OpPut("x", "1"), clientv3.OpPut("x", "2")).Commit()
	wantWireError(t, "txn duplicate keys", err, rpctypes.ErrGRPCDuplicateKey)
	_, err = cli.Txn(ctx).Then(clientv3.OpDelete("a", clientv3.WithPrefix()), clientv3.OpPut("ab", "2")).Commit()
	wantWireError(t, "txn put in deleted range", err, rpctypes.ErrGRPCDuplicateKey)

	many := make([]clientv3.Op, DefaultMaxTxnOps+1)
	for i := range many {
		many[i] = clientv3.OpPut("k"+strings.Repeat("x", i), "v")
	}
	_, err = cli.Txn(ctx).Then(many...).Commit()
	wantWireError(t, "txn too many ops", err, rpctypes.ErrGRPCTooManyOps)
	if _, err = cli.Txn(ctx).Then(many[:DefaultMaxTxnOps]...).Commit(); err != nil {
		t.Fatalf("txn with exactly max ops: %v", err)
	}

	// Over --max-request-bytes (1.5 MiB) but under the gRPC limit (2 MiB):
	// etcd's own error, not a transport error.
	big := strings.Repeat("x", DefaultMaxRequestBytes+1)
	_, err = cli.Put(ctx, "big", big)
	wantWireError(t, "oversized put", err, rpctypes.ErrGRPCRequestTooLarge)
	_, err = cli.Txn(ctx).Then(clientv3.OpPut("big", big)).Commit()
	wantWireError(t, "oversized txn", err, rpctypes.ErrGRPCRequestTooLarge)
	// Beyond the gRPC receive limit: gRPC's ResourceExhausted, as with etcd.
	_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("huge"), Value: make([]byte, DefaultMaxRequestBytes+grpcOverheadBytes+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("huge put: %v, want ResourceExhausted", err)
	}

	// None of this broke the server.
	if _, err := cli.Put(ctx, "still", "serving"); err != nil {
		t.Fatalf("put after errors: %v", err)
	}
	gr, err := cli.Get(ctx, "big")
	if err != nil || gr.Count != 0 {
		t.Fatalf("oversized put was stored: %v %+v", err, gr)
	}
}

func TestKVQuota(t *testing.T) {
	f := newFakeStore(t)
	f.quota = 1 // any write exceeds it
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)
	_, err := cli.Put(ctx, "a", "1")
	wantWireError(t, "put over quota", err, rpctypes.ErrGRPCNoSpace)
	// etcd checks the quota before validating, so even a bad write says
	// NOSPACE.
	_, err = pb.NewKVClient(cli.ActiveConnection()).Put(ctx, &pb.PutRequest{Value: []byte("v")})
	wantWireError(t, "bad put over quota", err, rpctypes.ErrGRPCNoSpace)
	if as := f.Alarms(); len(as) == 0 || as[0].Alarm != pb.AlarmType_NOSPACE || as[0].MemberID != fakeMemberID {
		t.Fatalf("NOSPACE alarm not raised: %v", as)
	}
	// Reads and deletes are not charged.
	if _, err := cli.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}

func TestRangeStream(t *testing.T) {
	f := newFakeStore(t)
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)
	const n = 45 // several chunks: the first holds 10 keys
	for i := range n {
		if _, err := cli.Put(ctx, "k/"+string(rune('a'+i/26))+string(rune('a'+i%26)), "v"); err != nil {
			t.Fatal(err)
		}
	}
	kv := pb.NewKVClient(cli.ActiveConnection())

	collect := func(r *pb.RangeRequest) (kvs int, last *pb.RangeResponse, chunks int) {
		t.Helper()
		st, err := kv.RangeStream(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return kvs, last, chunks
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			kvs += len(resp.RangeResponse.Kvs)
			last = resp.RangeResponse
		}
	}
	kvs, last, chunks := collect(&pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0")})
	if kvs != n || last.Count != n || last.More || chunks < 2 {
		t.Fatalf("all: kvs=%d chunks=%d last=%+v", kvs, chunks, last)
	}
	checkFakeHeader(t, last.Header, n+1)

	kvs, last, _ = collect(&pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), Limit: 15})
	if kvs != 15 || last.Count != n || !last.More {
		t.Fatalf("limit 15: kvs=%d last=%+v", kvs, last)
	}
	_, last, chunks = collect(&pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), CountOnly: true})
	if chunks != 1 || last.Count != n {
		t.Fatalf("count only: chunks=%d last=%+v", chunks, last)
	}
	st, err := kv.RangeStream(ctx, &pb.RangeRequest{Key: []byte("k/"), SortOrder: pb.RangeRequest_DESCEND})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("custom sort: %v, want Unimplemented", err)
	}
}

func TestMaintenance(t *testing.T) {
	f := newFakeStore(t)
	addr := serveForTest(t, f, Config{})
	cli := dialClient(t, addr)
	ctx := testCtx(t)
	if _, err := cli.Put(ctx, "snap-key", "snap-value"); err != nil {
		t.Fatal(err)
	}

	st, err := cli.Status(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, st.Header, 2)
	if st.Version != version.Version || st.Leader != fakeMemberID || st.RaftIndex != 10 || st.RaftAppliedIndex != 9 ||
		st.RaftTerm != 2 || st.DbSize <= 0 || st.DbSizeInUse <= 0 || st.IsLearner || len(st.Errors) != 0 || st.DbSizeQuota <= 0 {
		t.Fatalf("status: %+v", st)
	}

	f.leader.Store(0)
	f.setAlarm(pb.AlarmType_NOSPACE)
	st, err = cli.Status(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Errors) != 2 || st.Errors[0] != "etcdserver: no leader" || !strings.Contains(st.Errors[1], "NOSPACE") {
		t.Fatalf("status errors: %q", st.Errors)
	}
	f.leader.Store(fakeMemberID)

	al, err := cli.AlarmList(ctx)
	if err != nil || len(al.Alarms) != 1 {
		t.Fatalf("alarm list: %v %+v", err, al)
	}
	checkFakeHeader(t, al.Header, 0)
	if _, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: fakeMemberID, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}

	hk, err := cli.HashKV(ctx, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkFakeHeader(t, hk.Header, 2)
	if hk.Hash == 0 || hk.HashRevision != 2 {
		t.Fatalf("hashkv: %+v", hk)
	}
	hk2, err := cli.HashKV(ctx, addr, 0)
	if err != nil || hk2.Hash != hk.Hash {
		t.Fatalf("hashkv not stable: %v %d vs %d", err, hk2.Hash, hk.Hash)
	}
	_, err = cli.HashKV(ctx, addr, 50)
	wantWireError(t, "hashkv future revision", err, rpctypes.ErrGRPCFutureRev)

	if _, err := cli.Defragment(ctx, addr); err != nil {
		t.Fatal(err)
	}
	// etcd 3.7.3 answers a cancel without a downgrade with success.
	dg, err := cli.Downgrade(ctx, clientv3.DowngradeCancel, "")
	if err != nil || dg.Version != "3.7" {
		t.Fatalf("downgrade cancel: %v %+v", err, dg)
	}
	checkFakeHeader(t, dg.Header, 2)
	_, err = cli.Downgrade(ctx, clientv3.DowngradeValidate, "3.6")
	wantWireError(t, "downgrade validate", err, rpctypes.ErrGRPCInvalidDowngradeTargetVersion)
	_, err = cli.Downgrade(ctx, clientv3.DowngradeValidate, "x.y")
	wantWireError(t, "downgrade bad version", err, rpctypes.ErrGRPCWrongDowngradeVersionFormat)

	// What `etcdctl snapshot save` does, checksum verification included.
	db := filepath.Join(t.TempDir(), "snap.db")
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: []string{addr}, DialTimeout: testTimeout}, db); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		t.Fatal("snapshot sha256 trailer does not match its body")
	}
	// The body is the bbolt file with our key in it.
	if err := os.WriteFile(db, body, 0o600); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	found := false
	if err := bdb.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return errors.New("no key bucket")
		}
		return b.ForEach(func(_, v []byte) error {
			found = found || bytes.Contains(v, []byte("snap-value"))
			return nil
		})
	}); err != nil || !found {
		t.Fatalf("snapshot content: err=%v found=%v", err, found)
	}
}

func TestClusterMemberList(t *testing.T) {
	f := newFakeStore(t)
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)
	for _, opts := range [][]clientv3.OpOption{nil, {clientv3.WithSerializable()}} {
		ml, err := cli.MemberList(ctx, opts...)
		if err != nil {
			t.Fatal(err)
		}
		checkFakeHeader(t, ml.Header, 0)
		if ml.Header.Revision != 0 {
			t.Fatalf("member list header has a revision (etcd's has none): %d", ml.Header.Revision)
		}
		if len(ml.Members) != 1 {
			t.Fatalf("members: %+v", ml.Members)
		}
		m := ml.Members[0]
		if m.ID != fakeMemberID || m.Name != "default" || m.PeerURLs[0] != "http://127.0.0.1:2380" || m.ClientURLs[0] != "http://127.0.0.1:2379" || m.IsLearner {
			t.Fatalf("member: %+v", m)
		}
	}
	_, err := cli.MemberAdd(ctx, []string{"http://127.0.0.1:2390"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("member add: %v, want Unimplemented", err)
	}
	// clientv3 checks URLs itself; the raw client sees the server's answer.
	_, err = pb.NewClusterClient(cli.ActiveConnection()).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"::not a url"}})
	wantWireError(t, "member add bad url", err, rpctypes.ErrGRPCMemberBadURLs)
}

func TestInterceptors(t *testing.T) {
	f := newFakeStore(t)
	addr := serveForTest(t, f, Config{})
	cli := dialClient(t, addr)
	ctx := testCtx(t)

	kv := pb.NewKVClient(cli.ActiveConnection())
	f.leader.Store(0)
	// Raw client: clientv3 would retry Unavailable for a while first.
	_, err := kv.Range(clientv3.WithRequireLeader(ctx), &pb.RangeRequest{Key: []byte("a")})
	wantWireError(t, "require leader without one", err, rpctypes.ErrGRPCNoLeader)
	if _, err := cli.Get(ctx, "a"); err != nil {
		t.Fatalf("get without leader requirement: %v", err)
	}
	f.leader.Store(fakeMemberID)
	if _, err := cli.Get(clientv3.WithRequireLeader(ctx), "a"); err != nil {
		t.Fatalf("require leader with one: %v", err)
	}

	f.learner.Store(true)
	_, err = cli.Put(ctx, "a", "1")
	wantWireError(t, "learner put", err, rpctypes.ErrGRPCNotSupportedForLearner)
	_, err = cli.Get(ctx, "a")
	wantWireError(t, "learner linearizable get", err, rpctypes.ErrGRPCNotSupportedForLearner)
	_, err = cli.MemberList(ctx)
	wantWireError(t, "learner member list", err, rpctypes.ErrGRPCNotSupportedForLearner)
	if _, err := cli.Get(ctx, "a", clientv3.WithSerializable()); err != nil {
		t.Fatalf("learner serializable get: %v", err)
	}
	if _, err := cli.Status(ctx, addr); err != nil {
		t.Fatalf("learner status: %v", err)
	}
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatalf("learner snapshot: %v", err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("learner snapshot read: %v", err)
	}
	rc.Close()
	st, err := kv.RangeStream(ctx, &pb.RangeRequest{Key: []byte("a"), Serializable: true})
	if err == nil {
		_, err = st.Recv()
	}
	wantWireError(t, "learner stream", err, rpctypes.ErrGRPCNotSupportedForLearner)
}

func TestHTTPEndpoints(t *testing.T) {
	f := newFakeStore(t)
	addr := serveForTest(t, f, Config{Version: "1.2.3", ExtraHTTP: func(mux *http.ServeMux) {
		mux.HandleFunc("/mesh/status", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "mesh ok") })
	}})
	base := "http://" + addr
	hc := &http.Client{Timeout: testTimeout}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	wantHealth := func(path string, code int, health, reason string) {
		t.Helper()
		gotCode, body := get(path)
		var h struct{ Health, Reason string }
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("%s: %q: %v", path, body, err)
		}
		if gotCode != code || h.Health != health || h.Reason != reason {
			t.Fatalf("%s: %d %q, want %d health=%s reason=%q", path, gotCode, body, code, health, reason)
		}
	}

	wantHealth("/health", 200, "true", "")
	if _, body := get("/health"); body != `{"health":"true","reason":""}` {
		t.Fatalf("/health body %q", body)
	}
	f.leader.Store(0)
	wantHealth("/health", 503, "false", "RAFT NO LEADER")
	wantHealth("/health?serializable=true", 200, "true", "")
	f.leader.Store(fakeMemberID)
	f.setAlarm(pb.AlarmType_NOSPACE)
	wantHealth("/health", 503, "false", "ALARM NOSPACE")
	wantHealth("/health?exclude=NOSPACE", 200, "true", "")
	f.Alarm(context.Background(), &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE})

	if code, body := get("/livez"); code != 200 || body != "ok\n" {
		t.Fatalf("/livez: %d %q", code, body)
	}
	if code, body := get("/readyz?verbose"); code != 200 || !strings.Contains(body, "[+]linearizable_read ok") || !strings.HasSuffix(body, "ok\n") {
		t.Fatalf("/readyz?verbose: %d %q", code, body)
	}
	f.learner.Store(true)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "[-]non_learner failed: not supported for learner") {
		t.Fatalf("/readyz as learner: %d %q", code, body)
	}
	if code, _ := get("/readyz?exclude=non_learner"); code != 200 {
		t.Fatalf("/readyz excluding non_learner: %d", code)
	}
	if code, _ := get("/readyz/non_learner"); code != 503 {
		t.Fatalf("/readyz/non_learner: %d", code)
	}
	f.learner.Store(false)
	f.setAlarm(pb.AlarmType_CORRUPT)
	if code, body := get("/readyz/data_corruption"); code != 503 || !strings.Contains(body, "alarm activated: CORRUPT") {
		t.Fatalf("/readyz/data_corruption: %d %q", code, body)
	}

	code, body := get("/version")
	var v map[string]string
	if err := json.Unmarshal([]byte(body), &v); err != nil || code != 200 {
		t.Fatalf("/version: %d %q %v", code, body, err)
	}
	if v["etcdserver"] != version.Version || v["etcdcluster"] != "3.7.0" || v["meshetcd"] != "1.2.3" || v["storage"] == "" {
		t.Fatalf("/version: %v", v)
	}

	code, body = get("/metrics")
	if code != 200 || !strings.Contains(body, "etcd_server_health_success") || !strings.Contains(body, "etcd_mvcc_db_total_size_in_bytes") {
		t.Fatalf("/metrics: %d, missing etcd metrics", code)
	}
	if code, body := get("/mesh/status"); code != 200 || body != "mesh ok" {
		t.Fatalf("extra handler: %d %q", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("pprof without EnablePprof: %d", code)
	}
	resp, err := hc.Post(base+"/health", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("POST /health: %d", resp.StatusCode)
	}
}

func TestHTTPPprof(t *testing.T) {
	f := newFakeStore(t)
	srvAddr := serveForTest(t, f, Config{EnablePprof: true})
	resp, err := (&http.Client{Timeout: testTimeout}).Get("http://" + srvAddr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("pprof: %d", resp.StatusCode)
	}
}

func TestHTTPAccessControl(t *testing.T) {
	f := newFakeStore(t)
	hc := &http.Client{Timeout: testTimeout}
	do := func(addr, method, path, host string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	// etcd's defaults: any host, CORS "*".
	open := serveForTest(t, f, Config{})
	resp := do(open, http.MethodGet, "/health", "evil.example:2379")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "POST, GET, OPTIONS, PUT, DELETE" {
		t.Fatalf("default access: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := do(open, http.MethodOptions, "/v3/kv/range", ""); resp.StatusCode != 200 {
		t.Fatalf("CORS preflight: %d", resp.StatusCode)
	}

	strict := serveForTest(t, f, Config{HostWhitelist: []string{"127.0.0.1", "etcd.local"}, CORS: []string{"https://ui.example"}})
	if resp := do(strict, http.MethodGet, "/health", "evil.example"); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("unlisted host: %d", resp.StatusCode)
	}
	resp = do(strict, http.MethodGet, "/health", "etcd.local:2379")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("listed host: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestLimitsDefaultToStoreConfig(t *testing.T) {
	f := newFakeStore(t)
	f.maxTxnOps = 2
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)
	_, err := cli.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("b", "1"), clientv3.OpPut("c", "1")).Commit()
	wantWireError(t, "3 ops with store limit 2", err, rpctypes.ErrGRPCTooManyOps)
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("b", "1")).Commit(); err != nil {
		t.Fatalf("2 ops: %v", err)
	}
}

func TestMetricsHandler(t *testing.T) {
	f := newFakeStore(t)
	h := NewMetricsHandler(f, Config{Logger: zap.NewNop()})
	for path, want := range map[string]int{"/metrics": 200, "/health": 200, "/livez": 200, "/readyz": 200, "/version": 404, "/v3/kv/range": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
