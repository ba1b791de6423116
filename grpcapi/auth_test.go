package grpcapi

import (
	"testing"

	"go.uber.org/zap"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestAuthWithKVStore enables auth on a real kvstore through the Auth
// service and checks who may do what, with etcd's errors: admin-only
// maintenance (compact, defragment, snapshot, hashkv, alarm changes), any
// authenticated user for status, member list and alarm list, and nothing
// for anonymous callers.
func TestAuthWithKVStore(t *testing.T) {
	s := startKVStore(t)
	addr := serveForTest(t, s, Config{})
	admin := dialClient(t, addr)
	ctx := testCtx(t)

	if _, err := admin.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserAdd(ctx, "alice", "alicepw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RoleAdd(ctx, "rw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RoleGrantPermission(ctx, "rw", "a", "b", clientv3.PermissionType(authpb.READWRITE)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "alice", "rw"); err != nil {
		t.Fatal(err)
	}
	_, err := admin.UserAdd(ctx, "alice", "again")
	wantWireError(t, "duplicate user", err, rpctypes.ErrGRPCUserAlreadyExist)
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}

	login := func(user, pw string) *clientv3.Client {
		t.Helper()
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, Username: user, Password: pw, DialTimeout: testTimeout, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	root := login("root", "rootpw")
	alice := login("alice", "alicepw")
	_, err = clientv3.New(clientv3.Config{Endpoints: []string{addr}, Username: "alice", Password: "wrong", DialTimeout: testTimeout, Logger: zap.NewNop()})
	wantWireError(t, "bad password", err, rpctypes.ErrGRPCAuthFailed)

	// Anonymous: the connection from before auth was enabled.
	_, err = admin.Put(ctx, "a1", "v")
	wantWireError(t, "anonymous put", err, rpctypes.ErrGRPCUserEmpty)
	_, err = admin.Status(ctx, addr)
	wantWireError(t, "anonymous status", err, rpctypes.ErrGRPCUserEmpty)
	_, err = admin.MemberList(ctx)
	wantWireError(t, "anonymous member list", err, rpctypes.ErrGRPCUserEmpty)

	// alice: her keys, status, lists; no admin work.
	if _, err := alice.Put(ctx, "a1", "v"); err != nil {
		t.Fatalf("alice put in her range: %v", err)
	}
	_, err = alice.Put(ctx, "z", "v")
	wantWireError(t, "alice put outside her range", err, rpctypes.ErrGRPCPermissionDenied)
	if _, err := alice.Status(ctx, addr); err != nil {
		t.Fatalf("alice status: %v", err)
	}
	if _, err := alice.MemberList(ctx); err != nil {
		t.Fatalf("alice member list: %v", err)
	}
	if _, err := alice.AlarmList(ctx); err != nil {
		t.Fatalf("alice alarm list: %v", err)
	}
	_, err = alice.Compact(ctx, 1)
	wantWireError(t, "alice compact", err, rpctypes.ErrGRPCPermissionDenied)
	_, err = alice.Defragment(ctx, addr)
	wantWireError(t, "alice defrag", err, rpctypes.ErrGRPCPermissionDenied)
	_, err = alice.HashKV(ctx, addr, 0)
	wantWireError(t, "alice hashkv", err, rpctypes.ErrGRPCPermissionDenied)
	_, err = alice.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: uint64(s.MemberID()), Alarm: pb.AlarmType_NOSPACE})
	wantWireError(t, "alice alarm disarm", err, rpctypes.ErrGRPCPermissionDenied)
	rc, err := alice.Snapshot(ctx)
	if err == nil {
		_, err = rc.Read(make([]byte, 1))
		rc.Close()
	}
	wantWireError(t, "alice snapshot", err, rpctypes.ErrGRPCPermissionDenied)
	_, err = alice.UserAdd(ctx, "mallory", "x")
	wantWireError(t, "alice user add", err, rpctypes.ErrGRPCPermissionDenied)

	// root: everything.
	if _, err := root.Compact(ctx, 1); err != nil {
		t.Fatalf("root compact: %v", err)
	}
	if _, err := root.Defragment(ctx, addr); err != nil {
		t.Fatalf("root defrag: %v", err)
	}
	if _, err := root.HashKV(ctx, addr, 0); err != nil {
		t.Fatalf("root hashkv: %v", err)
	}
	st, err := root.AuthStatus(ctx)
	if err != nil || !st.Enabled {
		t.Fatalf("auth status: %v %+v", err, st)
	}
	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatalf("auth disable: %v", err)
	}
	if _, err := admin.Put(ctx, "z", "v"); err != nil {
		t.Fatalf("anonymous put after disable: %v", err)
	}
}
