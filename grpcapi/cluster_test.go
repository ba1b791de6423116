package grpcapi

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	etcderr "go.etcd.io/etcd/server/v3/etcdserver/errors"

	"github.com/meshetcd/meshetcd/kvstore"
)

// memberFake adds membership changes to the fake store: it records what it
// was asked and answers with err when set.
type memberFake struct {
	*fakeStore
	err      error
	added    []kvstore.Member
	removed  []uint64
	updated  []kvstore.Member
	promoted []uint64
}

func (f *memberFake) AddMember(_ context.Context, m kvstore.Member) ([]*kvstore.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.added = append(f.added, m)
	return append(f.Members(), &m), nil
}

func (f *memberFake) RemoveMember(_ context.Context, id uint64) ([]*kvstore.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.removed = append(f.removed, id)
	return f.Members(), nil
}

func (f *memberFake) UpdateMember(_ context.Context, m kvstore.Member) ([]*kvstore.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.updated = append(f.updated, m)
	return f.Members(), nil
}

func (f *memberFake) PromoteMember(_ context.Context, id uint64) ([]*kvstore.Member, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.promoted = append(f.promoted, id)
	return f.Members(), nil
}

func TestClusterMembershipChanges(t *testing.T) {
	f := &memberFake{fakeStore: newFakeStore(t)}
	cli := dialClient(t, serveForTest(t, f, Config{}))
	ctx := testCtx(t)

	add, err := cli.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:2390"})
	if err != nil {
		t.Fatalf("member add --learner: %v", err)
	}
	if len(f.added) != 1 || !f.added[0].IsLearner || add.Member.ID != uint64(f.added[0].ID) || !add.Member.IsLearner {
		t.Fatalf("added %+v, answer %+v", f.added, add.Member)
	}
	// etcd's id: derived from the peer URLs, cluster token and time.
	if add.Member.ID == 0 || add.Member.PeerURLs[0] != "http://127.0.0.1:2390" || len(add.Members) != 2 {
		t.Fatalf("answer %+v", add)
	}
	checkFakeHeader(t, add.Header, 0)
	if _, err := cli.MemberAdd(ctx, []string{"http://127.0.0.1:2391"}); err != nil || len(f.added) != 2 || f.added[1].IsLearner {
		t.Fatalf("member add voter: %v %+v", err, f.added)
	}
	if _, err := cli.MemberRemove(ctx, 42); err != nil || len(f.removed) != 1 || f.removed[0] != 42 {
		t.Fatalf("member remove: %v %v", err, f.removed)
	}
	if _, err := cli.MemberUpdate(ctx, 43, []string{"http://127.0.0.1:2392"}); err != nil ||
		len(f.updated) != 1 || f.updated[0].ID != types.ID(43) || f.updated[0].PeerURLs[0] != "http://127.0.0.1:2392" {
		t.Fatalf("member update: %v %+v", err, f.updated)
	}
	if _, err := cli.MemberPromote(ctx, 44); err != nil || len(f.promoted) != 1 || f.promoted[0] != 44 {
		t.Fatalf("member promote: %v %v", err, f.promoted)
	}

	// kvstore's errors come out as etcd's wire errors. The raw client is
	// used so clientv3's retries do not get in the way.
	raw := pb.NewClusterClient(cli.ActiveConnection())
	for _, c := range []struct {
		err  error
		want error
		call func() error
	}{
		{membership.ErrIDNotFound, rpctypes.ErrGRPCMemberNotFound, func() error {
			_, err := raw.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: 1})
			return err
		}},
		{membership.ErrIDRemoved, rpctypes.ErrGRPCMemberNotFound, func() error {
			_, err := raw.MemberUpdate(ctx, &pb.MemberUpdateRequest{ID: 1, PeerURLs: []string{"http://127.0.0.1:1"}})
			return err
		}},
		{membership.ErrPeerURLexists, rpctypes.ErrGRPCPeerURLExist, func() error {
			_, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:1"}})
			return err
		}},
		{membership.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner, func() error {
			_, err := raw.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: 1})
			return err
		}},
		{etcderr.ErrLearnerNotReady, rpctypes.ErrGRPCLearnerNotReady, func() error {
			_, err := raw.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: 1})
			return err
		}},
		{membership.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners, func() error {
			_, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:1"}, IsLearner: true})
			return err
		}},
		{etcderr.ErrUnhealthy, rpctypes.ErrGRPCUnhealthy, func() error {
			_, err := raw.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: 1})
			return err
		}},
		{etcderr.ErrNotEnoughStartedMembers, rpctypes.ErrMemberNotEnoughStarted, func() error {
			_, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:1"}})
			return err
		}},
	} {
		f.err = c.err
		wantWireError(t, c.err.Error(), c.call(), c.want)
	}
}
