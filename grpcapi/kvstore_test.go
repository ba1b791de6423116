package grpcapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"

	"github.com/meshetcd/meshetcd/kvstore"
)

// startKVStore starts a real single-member kvstore in a temp dir and waits
// until it is ready. Fast raft timing: a loaded machine slows ticks, not
// correctness.
func startKVStore(t *testing.T) *kvstore.Server {
	t.Helper()
	ctx := testCtx(t)
	s, err := kvstore.New(ctx, kvstore.Config{
		Logger:            zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		DataDir:           t.TempDir(),
		HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout:   100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("kvstore.New: %v", err)
	}
	// Registered before serveForTest's cleanup, so it runs after it: the
	// member outlives the server that serves it.
	t.Cleanup(s.Stop)
	select {
	case <-s.ReadyNotify():
	case <-ctx.Done():
		t.Fatal("kvstore not ready")
	}
	return s
}

// TestWithKVStore drives a real single-member kvstore through Serve with
// clientv3, the way etcdctl would.
func TestWithKVStore(t *testing.T) {
	s := startKVStore(t)
	addr := serveForTest(t, s, Config{Version: "test"})
	cli := dialClient(t, addr)
	ctx := testCtx(t)
	kv := pb.NewKVClient(cli.ActiveConnection())

	hdr := func(h *pb.ResponseHeader, rev int64) {
		t.Helper()
		if h == nil || h.ClusterId == 0 || h.MemberId != uint64(s.MemberID()) || h.ClusterId != uint64(s.ClusterID()) || h.RaftTerm == 0 {
			t.Fatalf("header %+v (member %x cluster %x)", h, s.MemberID(), s.ClusterID())
		}
		if h.Revision != rev {
			t.Fatalf("header revision %d, want %d", h.Revision, rev)
		}
	}

	t.Run("kv", func(t *testing.T) {
		pr, err := cli.Put(ctx, "a", "1")
		if err != nil {
			t.Fatal(err)
		}
		hdr(pr.Header, 2)
		pr, err = cli.Put(ctx, "b", "2", clientv3.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		hdr(pr.Header, 3)
		gr, err := cli.Get(ctx, "", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		hdr(gr.Header, 3)
		if gr.Count != 2 || string(gr.Kvs[1].Value) != "2" {
			t.Fatalf("get: %+v", gr)
		}
		gr, err = cli.Get(ctx, "a", clientv3.WithSerializable())
		if err != nil || string(gr.Kvs[0].Value) != "1" {
			t.Fatalf("serializable get: %v %+v", err, gr)
		}
		dr, err := cli.Delete(ctx, "a")
		if err != nil || dr.Deleted != 1 {
			t.Fatalf("delete: %v %+v", err, dr)
		}
		hdr(dr.Header, 4)
		tr, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.Value("b"), "=", "2")).
			Then(clientv3.OpPut("c", "3")).
			Else(clientv3.OpPut("d", "4")).
			Commit()
		if err != nil || !tr.Succeeded {
			t.Fatalf("txn: %v %+v", err, tr)
		}
		hdr(tr.Header, 5)
		tr, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("b"), "=", "nope")).Else(clientv3.OpGet("c")).Commit()
		if err != nil || tr.Succeeded || string(tr.Responses[0].GetResponseRange().Kvs[0].Value) != "3" {
			t.Fatalf("failed-compare txn: %v %+v", err, tr)
		}
		hdr(tr.Header, 5)
		old, err := cli.Get(ctx, "a", clientv3.WithRev(3))
		if err != nil || len(old.Kvs) != 1 {
			t.Fatalf("get at rev 3: %v %+v", err, old)
		}
		cr, err := cli.Compact(ctx, 4, clientv3.WithCompactPhysical())
		if err != nil {
			t.Fatal(err)
		}
		hdr(cr.Header, 5)
		_, err = cli.Get(ctx, "a", clientv3.WithRev(3))
		wantWireError(t, "compacted", err, rpctypes.ErrGRPCCompacted)
		_, err = cli.Get(ctx, "a", clientv3.WithRev(99))
		wantWireError(t, "future", err, rpctypes.ErrGRPCFutureRev)
	})

	t.Run("range stream", func(t *testing.T) {
		for i := range 35 {
			if _, err := cli.Put(ctx, fmt.Sprintf("s/%02d", i), strings.Repeat("v", i)); err != nil {
				t.Fatal(err)
			}
		}
		want, err := cli.Get(ctx, "s/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		ch, err := cli.GetStream(ctx, "s/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		got, err := clientv3.GetStreamToGetResponse(ch)
		if err != nil {
			t.Fatal(err)
		}
		if got.Count != 35 || len(got.Kvs) != 35 || got.More || got.Header.Revision != want.Header.Revision {
			t.Fatalf("stream: count=%d kvs=%d more=%v rev=%d, want 35 kvs at rev %d", got.Count, len(got.Kvs), got.More, got.Header.Revision, want.Header.Revision)
		}
		for i := range want.Kvs {
			if !proto.Equal(got.Kvs[i], want.Kvs[i]) {
				t.Fatalf("kv %d: %v vs %v", i, got.Kvs[i], want.Kvs[i])
			}
		}
		hdr(got.Header, want.Header.Revision)
	})

	t.Run("errors", func(t *testing.T) {
		_, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")})
		wantWireError(t, "empty key", err, rpctypes.ErrGRPCEmptyKey)
		_, err = cli.Txn(ctx).Then(clientv3.OpPut("x", "1"), clientv3.OpPut("x", "2")).Commit()
		wantWireError(t, "duplicate", err, rpctypes.ErrGRPCDuplicateKey)
		many := make([]clientv3.Op, DefaultMaxTxnOps+1)
		for i := range many {
			many[i] = clientv3.OpGet("k")
		}
		_, err = cli.Txn(ctx).Then(many...).Commit()
		wantWireError(t, "too many ops", err, rpctypes.ErrGRPCTooManyOps)
		_, err = cli.Put(ctx, "big", strings.Repeat("x", DefaultMaxRequestBytes+1))
		wantWireError(t, "too large", err, rpctypes.ErrGRPCRequestTooLarge)
		// Just under the limit once kvstore wraps it in a raft request:
		// whichever layer refuses, the client sees etcd's error.
		_, err = cli.Put(ctx, "big", strings.Repeat("x", DefaultMaxRequestBytes-10))
		if err != nil {
			wantWireError(t, "almost too large", err, rpctypes.ErrGRPCRequestTooLarge)
		}
		if _, err := cli.Put(ctx, "after", "errors"); err != nil {
			t.Fatalf("put after errors: %v", err)
		}
	})

	t.Run("maintenance", func(t *testing.T) {
		st, err := cli.Status(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != version.Version || st.Leader != uint64(s.MemberID()) || st.RaftIndex == 0 || st.RaftAppliedIndex == 0 ||
			st.RaftTerm == 0 || st.DbSize == 0 || st.IsLearner || len(st.Errors) != 0 {
			t.Fatalf("status: %+v", st)
		}
		hk, err := cli.HashKV(ctx, addr, 0)
		if err != nil || hk.Hash == 0 {
			t.Fatalf("hashkv: %v %+v", err, hk)
		}
		al, err := cli.AlarmList(ctx)
		if err != nil || len(al.Alarms) != 0 {
			t.Fatalf("alarms: %v %+v", err, al)
		}
		if _, err := cli.Defragment(ctx, addr); err != nil {
			t.Fatalf("defrag: %v", err)
		}
		ml, err := cli.MemberList(ctx)
		if err != nil || len(ml.Members) != 1 || ml.Members[0].ID != uint64(s.MemberID()) || ml.Members[0].Name != "default" {
			t.Fatalf("member list: %v %+v", err, ml)
		}
		db := filepath.Join(t.TempDir(), "snap.db")
		if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: []string{addr}, DialTimeout: testTimeout}, db); err != nil {
			t.Fatalf("snapshot save: %v", err)
		}
		data, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data[:len(data)-sha256.Size])
		if !bytes.Equal(sum[:], data[len(data)-sha256.Size:]) {
			t.Fatal("snapshot checksum mismatch")
		}
	})

	t.Run("http", func(t *testing.T) {
		hc := &http.Client{Timeout: testTimeout}
		for path, want := range map[string]string{
			"/health": `{"health":"true","reason":""}`,
			"/livez":  "ok\n",
			"/readyz": "ok\n",
		} {
			resp, err := hc.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != want {
				t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
			}
		}
		resp, err := hc.Get("http://" + addr + "/version")
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]string
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || v["etcdserver"] != version.Version || v["meshetcd"] != "test" {
			t.Fatalf("/version: %v %v", err, v)
		}
		resp, err = hc.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			"etcd_mvcc_db_total_size_in_bytes",
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}`,
			`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"}`,
			`grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}`,
			`etcd_server_client_requests_total{client_api_version="3.7",type="unary"}`,
			"etcd_network_client_grpc_sent_bytes_total",
			"etcd_network_client_grpc_received_bytes_total",
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "etcd_network_client_grpc_received_bytes_total ") && strings.HasSuffix(line, " 0") {
				t.Errorf("no received bytes counted: %s", line)
			}
		}
	})
}
