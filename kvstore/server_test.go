package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/metadata"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/auth"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"bad cluster state", func(c *Config) { c.InitialClusterState = "maybe" }, "InitialClusterState"},
		{"election too short", func(c *Config) { c.ElectionTimeout = 2 * c.HeartbeatInterval }, "ElectionTimeout"},
		{"raft message too small", func(c *Config) { c.MaxSizePerMsg = 1024 }, "MaxSizePerMsg"},
		{"bad compaction mode", func(c *Config) { c.AutoCompactionMode = "sometimes"; c.AutoCompactionRetention = "5" }, "AutoCompactionMode"},
		{"bad retention", func(c *Config) { c.AutoCompactionMode = "periodic"; c.AutoCompactionRetention = "soon" }, "AutoCompactionRetention"},
		{"not in initial cluster", func(c *Config) { c.Name = "other"; c.InitialCluster = nil }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			tt.mutate(&cfg)
			if tt.name == "not in initial cluster" {
				// Name "other" with a default initial cluster of itself is fine.
				s := startServer(t, cfg)
				s.Stop()
				return
			}
			s, err := New(context.Background(), cfg)
			if err == nil {
				s.Stop()
				t.Fatal("New accepted an invalid config")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not mention %s", err, tt.wantErr)
			}
		})
	}

	cfg, err := testConfig(t, "x").withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.requestTimeout() != 5*time.Second+200*time.Millisecond {
		t.Fatalf("request timeout = %v", cfg.requestTimeout())
	}
	if cfg.minLeaseTTL() != 1 {
		t.Fatalf("min lease TTL = %d, want 1", cfg.minLeaseTTL())
	}
	if cfg.MaxSizePerMsg <= uint64(cfg.MaxRequestBytes) {
		t.Fatalf("default MaxSizePerMsg %d not above MaxRequestBytes %d", cfg.MaxSizePerMsg, cfg.MaxRequestBytes)
	}
}

func TestInfoAndMaintenance(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()
	ctx := testCtx(t)
	if s.Leader() != s.MemberID() || s.Term() == 0 || s.IsLearner() {
		t.Fatalf("leader %s term %d learner %v; want self, >0, false", s.Leader(), s.Term(), s.IsLearner())
	}
	if s.AppliedIndex() == 0 || s.CommittedIndex() < s.AppliedIndex() {
		t.Fatalf("applied %d committed %d", s.AppliedIndex(), s.CommittedIndex())
	}
	ms := s.Members()
	if len(ms) != 1 || ms[0].ID != s.MemberID() || ms[0].Name != "default" || ms[0].ClientURLs[0] != DefaultClientURL || ms[0].PeerURLs[0] != DefaultPeerURL {
		t.Fatalf("members = %+v", ms)
	}
	if err := s.MoveLeader(ctx, uint64(s.MemberID()), uint64(s.MemberID())); err != nil {
		t.Fatalf("MoveLeader to self: %v", err)
	}
	if err := s.MoveLeader(ctx, uint64(s.MemberID()), 12345); !errors.Is(err, servererrors.ErrBadLeaderTransferee) {
		t.Fatalf("MoveLeader to unknown: err = %v, want ErrBadLeaderTransferee", err)
	}
	if err := s.Defragment(); err != nil {
		t.Fatalf("Defragment: %v", err)
	}
	mustPut(t, s, "after-defrag", "ok")
	if len(s.Alarms()) != 0 {
		t.Fatalf("alarms on a fresh member: %v", s.Alarms())
	}
	if err := s.LinearizableReadNotify(ctx); err != nil {
		t.Fatalf("LinearizableReadNotify: %v", err)
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: make([]byte, s.Config().MaxRequestBytes)}); !errors.Is(err, servererrors.ErrRequestTooLarge) {
		t.Fatalf("oversized put: err = %v, want ErrRequestTooLarge", err)
	}
}

// TestTimedOutProposalLeavesNoWaiter blocks apply (by holding the backend
// batch lock) so a proposal commits but cannot finish before its deadline.
func TestTimedOutProposalLeavesNoWaiter(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()

	tx := s.Backend().BatchTx()
	tx.LockOutsideApply()
	// Long enough for raft to accept the proposal even on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	req := &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("slow"), Value: []byte("v")}}
	_, err := s.processInternalRaftRequestOnce(ctx, req)
	cancel()
	tx.Unlock()
	if !errors.Is(err, servererrors.ErrTimeout) {
		t.Fatalf("blocked proposal: err = %v, want ErrTimeout", err)
	}
	if s.w.IsRegistered(req.Header.ID) {
		t.Fatal("a timed-out proposal left its waiter registered")
	}
	// The write itself was committed and applies once apply resumes.
	deadline := time.Now().Add(waitTimeout)
	for len(mustGet(t, s, "slow").Kvs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("committed put never applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.w.IsRegistered(req.Header.ID) {
		t.Fatal("applying the timed-out proposal re-registered a waiter")
	}
}

func TestProposalWithoutQuorumFreesWaiter(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.InitialCluster = mustURLsMap(t, "default=http://localhost:2380,other=http://localhost:2381")
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req := &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k")}}
	if _, err := s.processInternalRaftRequestOnce(ctx, req); err == nil {
		t.Fatal("a proposal without a quorum succeeded")
	}
	if s.w.IsRegistered(req.Header.ID) {
		t.Fatal("a failed proposal left its waiter registered")
	}
	select {
	case <-s.ReadyNotify():
		t.Fatal("member without a quorum reported ready")
	default:
	}
}

func TestAuth(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.BcryptCost = bcrypt.MinCost
	s := startServer(t, cfg)
	defer s.Stop()
	ctx := testCtx(t)

	if _, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"}); err != nil {
		t.Fatalf("UserAdd root: %v", err)
	}
	if _, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
		t.Fatalf("UserGrantRole: %v", err)
	}
	if _, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "alicepw"}); err != nil {
		t.Fatalf("UserAdd alice: %v", err)
	}
	if _, err := s.AuthEnable(ctx, &pb.AuthEnableRequest{}); err != nil {
		t.Fatalf("AuthEnable: %v", err)
	}
	if _, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "wrong"}); !errors.Is(err, auth.ErrAuthFailed) {
		t.Fatalf("bad password: err = %v, want ErrAuthFailed", err)
	}
	tok, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "rootpw"})
	if err != nil || tok.Token == "" {
		t.Fatalf("Authenticate root = %+v, %v", tok, err)
	}
	rootCtx := metadata.NewIncomingContext(ctx, metadata.Pairs(rpctypes.TokenFieldNameGRPC, tok.Token))
	if _, err := s.Put(rootCtx, &pb.PutRequest{Key: []byte("secret"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put as root: %v", err)
	}
	if r, err := s.Range(rootCtx, &pb.RangeRequest{Key: []byte("secret")}); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("Range as root = %v, %v", r, err)
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("secret"), Value: []byte("x")}); !errors.Is(err, auth.ErrUserEmpty) {
		t.Fatalf("anonymous Put: err = %v, want ErrUserEmpty", err)
	}
	if _, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("secret"), Serializable: true}); !errors.Is(err, auth.ErrUserEmpty) {
		t.Fatalf("anonymous Range: err = %v, want ErrUserEmpty", err)
	}
	atok, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "alice", Password: "alicepw"})
	if err != nil {
		t.Fatal(err)
	}
	aliceCtx := metadata.NewIncomingContext(ctx, metadata.Pairs(rpctypes.TokenFieldNameGRPC, atok.Token))
	if _, err := s.Put(aliceCtx, &pb.PutRequest{Key: []byte("secret"), Value: []byte("x")}); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("Put without permission: err = %v, want ErrPermissionDenied", err)
	}
	if _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 10}); !errors.Is(err, auth.ErrUserEmpty) {
		t.Fatalf("anonymous LeaseGrant: err = %v, want ErrUserEmpty", err)
	}
	// Leases: a non-admin needs permission on every key attached to the
	// lease (put for renew, range for time-to-live and the lease list).
	lg, err := s.LeaseGrant(rootCtx, &pb.LeaseGrantRequest{TTL: 30})
	if err != nil {
		t.Fatalf("LeaseGrant as root: %v", err)
	}
	if _, err := s.Put(rootCtx, &pb.PutRequest{Key: []byte("secret"), Value: []byte("leased"), Lease: lg.ID}); err != nil {
		t.Fatalf("Put with lease as root: %v", err)
	}
	if _, err := s.LeaseRenew(aliceCtx, lease.LeaseID(lg.ID)); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("LeaseRenew without permission: err = %v, want ErrPermissionDenied", err)
	}
	if _, err := s.LeaseTimeToLive(aliceCtx, &pb.LeaseTimeToLiveRequest{ID: lg.ID, Keys: true}); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("LeaseTimeToLive without permission: err = %v, want ErrPermissionDenied", err)
	}
	if _, err := s.LeaseLeases(aliceCtx, &pb.LeaseLeasesRequest{}); !errors.Is(err, auth.ErrPermissionDenied) {
		t.Fatalf("LeaseLeases without permission: err = %v, want ErrPermissionDenied", err)
	}
	if _, err := s.LeaseRenew(rootCtx, lease.LeaseID(lg.ID)); err != nil {
		t.Fatalf("LeaseRenew as root: %v", err)
	}
	if r, err := s.LeaseTimeToLive(rootCtx, &pb.LeaseTimeToLiveRequest{ID: lg.ID, Keys: true}); err != nil || len(r.Keys) != 1 {
		t.Fatalf("LeaseTimeToLive as root = %v, %v", r, err)
	}
	if r, err := s.LeaseLeases(rootCtx, &pb.LeaseLeasesRequest{}); err != nil || len(r.Leases) != 1 {
		t.Fatalf("LeaseLeases as root = %v, %v", r, err)
	}
	users, err := s.UserList(rootCtx, &pb.AuthUserListRequest{})
	if err != nil || len(users.Users) != 2 {
		t.Fatalf("UserList = %v, %v", users, err)
	}
	if _, err := s.AuthDisable(rootCtx, &pb.AuthDisableRequest{}); err != nil {
		t.Fatalf("AuthDisable: %v", err)
	}
	mustPut(t, s, "open", "again")
}

func TestNoSpaceAlarm(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.QuotaBackendBytes = 1 // any write overflows
	s := startServer(t, cfg)
	defer s.Stop()
	ctx := testCtx(t)
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); !errors.Is(err, servererrors.ErrNoSpace) {
		t.Fatalf("put over quota: err = %v, want ErrNoSpace", err)
	}
	alarms := s.Alarms()
	if len(alarms) != 1 || alarms[0].Alarm != pb.AlarmType_NOSPACE || alarms[0].MemberID != uint64(s.MemberID()) {
		t.Fatalf("alarms = %v, want one NOSPACE for this member", alarms)
	}
	if _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("k2")}); !errors.Is(err, servererrors.ErrNoSpace) {
		t.Fatalf("put with NOSPACE raised: err = %v, want ErrNoSpace", err)
	}
	// Deletes and reads still work under the alarm.
	if _, err := s.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
	resp, err := s.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
	if err != nil || len(resp.Alarms) != 1 {
		t.Fatalf("Alarm GET = %v, %v", resp, err)
	}
}

func TestAutoCompactionPeriodic(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1s"
	s := startServer(t, cfg)
	defer s.Stop()
	for i := 0; i < 5; i++ {
		mustPut(t, s, "k", fmt.Sprint(i))
	}
	// The leader's compactor compacts revisions older than the retention.
	deadline := time.Now().Add(waitTimeout)
	for {
		_, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte("k"), Revision: 2})
		if errors.Is(err, mvcc.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatalf("Range at revision 2: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("auto-compaction never compacted revision 2")
		}
		mustPut(t, s, "tick", "x")
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRaftStoppingStopsMember: when raft stops underneath (as after a failed
// WAL write), the member stops too and pending or new requests fail.
func TestRaftStoppingStopsMember(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()
	s.r.Stop()
	select {
	case <-s.StopNotify():
	case <-time.After(waitTimeout):
		t.Fatal("member kept running after raft stopped")
	}
	if _, err := s.Put(testCtx(t), &pb.PutRequest{Key: []byte("k")}); err == nil {
		t.Fatal("Put on a stopped member succeeded")
	}
}

// TestRequestsAfterStopFail: requests racing with or after Stop get an
// error, never a panic on a closed store.
func TestRequestsAfterStopFail(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	mustPut(t, s, "a", "b")
	s.Stop()
	ctx := testCtx(t)
	calls := map[string]func() error{
		"serializable range": func() error {
			_, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Serializable: true})
			return err
		},
		"linearizable range": func() error { _, err := s.Range(ctx, &pb.RangeRequest{Key: []byte("a")}); return err },
		"read-only txn": func() error {
			_, err := s.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Serializable: true}}}}})
			return err
		},
		"put":         func() error { _, err := s.Put(ctx, &pb.PutRequest{Key: []byte("a")}); return err },
		"compact":     func() error { _, err := s.Compact(ctx, &pb.CompactionRequest{Revision: 1, Physical: true}); return err },
		"lease grant": func() error { _, err := s.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 10}); return err },
		"lease renew": func() error { _, err := s.LeaseRenew(ctx, 1); return err },
		"lease ttl":   func() error { _, err := s.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: 1}); return err },
		"lease list":  func() error { _, err := s.LeaseLeases(ctx, &pb.LeaseLeasesRequest{}); return err },
		"authenticate": func() error {
			_, err := s.Authenticate(ctx, &pb.AuthenticateRequest{Name: "u", Password: "p"})
			return err
		},
		"defragment": func() error { return s.Defragment() },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s after Stop succeeded", name)
		}
	}
}

func TestReadsRacingStop(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	mustPut(t, s, "a", "b")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := s.Range(context.Background(), &pb.RangeRequest{Key: []byte("a"), Serializable: i%2 == 0}); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	s.Stop()
	wg.Wait()
}

func TestClusterVersionIsSet(t *testing.T) {
	s := startServer(t, testConfig(t, t.TempDir()))
	defer s.Stop()
	deadline := time.Now().Add(waitTimeout)
	for s.cluster.Version() == nil {
		if time.Now().After(deadline) {
			t.Fatal("cluster version never set")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.cluster.Version().String(); got != version.Cluster(version.Version)+".0" {
		t.Fatalf("cluster version = %s", got)
	}
}
