package kvstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/auth"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
)

const (
	// maxPendingRevokes bounds concurrent revoke proposals for expired
	// leases (etcd's value).
	maxPendingRevokes = 16
	// applyTimeout bounds waiting for apply to catch up with commit before
	// answering lease questions on the leader (etcd's value).
	applyTimeout = time.Second
)

// LeaseGrant proposes a lease. A zero ID is replaced here, by the proposer,
// so that every member applies the same id.
func (s *Server) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	for r.ID == int64(lease.NoLease) {
		r.ID = int64(s.reqIDGen.Next() & ((1 << 63) - 1)) // positive int64 only
	}
	if err := s.requireAuthInfo(ctx); err != nil {
		return nil, err
	}
	resp, err := s.raftRequest(ctx, &pb.InternalRaftRequest{LeaseGrant: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.LeaseGrantResponse), nil
}

// LeaseRevoke proposes revoking a lease and deleting its keys.
func (s *Server) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	if err := s.requireAuthInfo(ctx); err != nil {
		return nil, err
	}
	resp, err := s.raftRequest(ctx, &pb.InternalRaftRequest{LeaseRevoke: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.LeaseRevokeResponse), nil
}

// LeaseRenew renews a lease on the leader, whose lessor alone tracks
// expiry. A follower forwards the keepalive to the leader over the mesh,
// retrying across leader changes until the request timeout (etcd's
// leasehttp; one try waits at most an election timeout, see
// forwardAttempt); without a mesh it returns lease.ErrNotPrimary.
func (s *Server) LeaseRenew(ctx context.Context, id lease.LeaseID) (int64, error) {
	if s.isLeader() {
		var ttl int64
		err := s.withStores(func() error {
			if !s.ensureLeadership(ctx) {
				return errNotPrimaryNoForward
			}
			// A lease we do not know yet may still be being granted.
			if s.lessor.Lookup(id) == nil {
				if err := s.waitAppliedIndex(); err != nil {
					return err
				}
			}
			if err := s.checkLeaseRenew(ctx, id); err != nil {
				return err
			}
			var err error
			ttl, err = s.lessor.Renew(id)
			return err
		})
		switch {
		case err == nil:
			return ttl, nil
		case errors.Is(err, errNotPrimaryNoForward):
			return -1, lease.ErrNotPrimary
		case !errors.Is(err, lease.ErrNotPrimary):
			if errors.Is(err, servererrors.ErrStopped) {
				return -1, err
			}
			return 0, err
		}
		// Demoted meanwhile: forward to the new leader.
	}
	return s.forwardLeaseRenew(ctx, id)
}

// errNotPrimaryNoForward: a leader that cannot confirm its leadership
// answers ErrNotPrimary at once so the client tries another member (etcd).
var errNotPrimaryNoForward = errors.New("kvstore: leadership not confirmed")

// withStores runs f while the stores are open (ErrStopped otherwise).
func (s *Server) withStores(f func() error) error {
	release, err := s.useStores()
	if err != nil {
		return err
	}
	defer release()
	return f()
}

func (s *Server) checkLeaseRenew(ctx context.Context, id lease.LeaseID) error {
	rev, err := s.checkLeaseKeys(ctx, s.leasesByID(id), func(ai *auth.AuthInfo, key []byte) error {
		return s.authStore.IsPutPermitted(ai, key)
	})
	if err != nil {
		return err
	}
	if rev != s.authStore.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// checkLeaseKeys is etcd's lease permission rule: with auth enabled, a
// caller who is not admin needs permit on every key attached to the
// leases. It returns the auth revision the check started at, which the
// caller compares again once its read is done.
func (s *Server) checkLeaseKeys(ctx context.Context, leases []*lease.Lease, permit func(ai *auth.AuthInfo, key []byte) error) (uint64, error) {
	rev := s.authStore.Revision()
	if !s.authStore.IsAuthEnabled() {
		return rev, nil
	}
	ai, err := s.AuthInfoFromCtx(ctx)
	if err != nil {
		return rev, err
	}
	if ai == nil {
		return rev, auth.ErrUserEmpty
	}
	if s.authStore.IsAdminPermitted(ai) == nil {
		return rev, nil
	}
	for _, l := range leases {
		for _, key := range l.Keys() {
			if err := permit(ai, []byte(key)); err != nil {
				return rev, err
			}
		}
	}
	return rev, nil
}

// leasesByID is the lease with id as a list, empty when it is unknown.
func (s *Server) leasesByID(id lease.LeaseID) []*lease.Lease {
	if l := s.lessor.Lookup(id); l != nil {
		return []*lease.Lease{l}
	}
	return nil
}

// rangePermitted is the per-key check for reading a lease's keys.
func (s *Server) rangePermitted(ai *auth.AuthInfo, key []byte) error {
	return s.authStore.IsRangePermitted(ai, key, []byte{})
}

// LeaseTimeToLive answers from the leader's lessor; a follower forwards
// the question to the leader over the mesh (etcd's leasehttp), or returns
// lease.ErrNotPrimary without a mesh.
func (s *Server) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := s.requireAuthInfo(ctx); err != nil {
		return nil, err
	}
	var rev uint64
	if r.Keys {
		err := s.withStores(func() error {
			var err error
			rev, err = s.checkLeaseTimeToLive(ctx, lease.LeaseID(r.ID))
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	var resp *pb.LeaseTimeToLiveResponse
	var err error
	if s.isLeader() {
		err = s.withStores(func() error {
			resp, err = s.leaseTimeToLiveOnLeader(r)
			return err
		})
		if err == nil {
			resp.Header = s.newHeader()
		}
	} else {
		resp, err = s.forwardLeaseTimeToLive(ctx, r)
	}
	if err != nil {
		return nil, err
	}
	if r.Keys && s.authStore.IsAuthEnabled() && rev != s.authStore.Revision() {
		return nil, auth.ErrAuthOldRevision
	}
	return resp, nil
}

// leaseTimeToLiveOnLeader is etcd's leader branch of leaseTimeToLive; the
// caller holds the stores.
func (s *Server) leaseTimeToLiveOnLeader(r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if !s.isLeader() {
		return nil, lease.ErrNotPrimary
	}
	if err := s.waitAppliedIndex(); err != nil {
		return nil, err
	}
	le := s.lessor.Lookup(lease.LeaseID(r.ID))
	if le == nil {
		return nil, lease.ErrLeaseNotFound
	}
	resp := &pb.LeaseTimeToLiveResponse{
		Header:     &pb.ResponseHeader{},
		ID:         r.ID,
		TTL:        int64(le.Remaining().Seconds()),
		GrantedTTL: le.TTL(),
	}
	if r.Keys {
		for _, k := range le.Keys() {
			resp.Keys = append(resp.Keys, []byte(k))
		}
	}
	// Demoted meanwhile: the remaining TTL is not trustworthy; retryable.
	if le.Demoted() {
		return nil, servererrors.ErrLeaderChanged
	}
	return resp, nil
}

func (s *Server) checkLeaseTimeToLive(ctx context.Context, id lease.LeaseID) (uint64, error) {
	return s.checkLeaseKeys(ctx, s.leasesByID(id), s.rangePermitted)
}

// LeaseLeases lists the leases this member knows.
func (s *Server) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	ls := s.lessor.Leases()
	if err := s.checkLeaseLeases(ctx, ls); err != nil {
		return nil, err
	}
	out := make([]*pb.LeaseStatus, len(ls))
	for i, l := range ls {
		out[i] = &pb.LeaseStatus{ID: int64(l.ID)}
	}
	return &pb.LeaseLeasesResponse{Header: s.newHeader(), Leases: out}, nil
}

func (s *Server) checkLeaseLeases(ctx context.Context, leases []*lease.Lease) error {
	rev, err := s.checkLeaseKeys(ctx, leases, s.rangePermitted)
	if err != nil {
		return err
	}
	if rev != s.authStore.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// waitAppliedIndex waits until everything committed so far is applied.
func (s *Server) waitAppliedIndex() error {
	select {
	case <-s.r.ApplyWait(s.r.CommittedIndex()):
		return nil
	case <-s.stopping:
		return servererrors.ErrStopped
	case <-time.After(applyTimeout):
		return servererrors.ErrTimeoutWaitAppliedIndex
	}
}

// ensureLeadership confirms this member still leads before leader-only
// work: a Ready loop that ticks recently is trusted, otherwise a ReadIndex
// round must succeed (etcd issue 15247).
func (s *Server) ensureLeadership(ctx context.Context) bool {
	if s.r.IsActive() {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	if err := s.LinearizableReadNotify(cctx); err != nil {
		s.lg.Warn("failed to confirm leadership", zap.Error(err))
		return false
	}
	return s.isLeader()
}

// revokeExpiredLeasesLoop proposes revocations for leases the (leader's)
// lessor reports expired.
func (s *Server) revokeExpiredLeasesLoop() {
	expired := s.lessor.ExpiredLeasesC()
	for {
		select {
		case leases := <-expired:
			s.goAttach(func() { s.revokeExpiredLeases(leases) })
		case <-s.stopping:
			return
		}
	}
}

func (s *Server) revokeExpiredLeases(leases []*lease.Lease) {
	if !s.ensureLeadership(s.ctx) {
		s.lg.Warn("not revoking expired leases: this member is not the leader")
		return
	}
	slots := make(chan struct{}, maxPendingRevokes)
	for _, l := range leases {
		select {
		case slots <- struct{}{}:
		case <-s.stopping:
			return
		}
		id := int64(l.ID)
		s.goAttach(func() {
			defer func() { <-slots }()
			// Revokes run as root: auth must not keep an expired lease alive.
			ctx := s.authStore.WithRoot(s.ctx)
			_, err := s.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
			switch {
			case err == nil:
				s.metrics.leaseExpired.Inc()
			case !errors.Is(err, lease.ErrLeaseNotFound):
				s.lg.Warn("failed to revoke expired lease", zap.String("lease-id", fmt.Sprintf("%016x", id)), zap.Error(err))
			}
		})
	}
}

// checkpointLease persists a lease's remaining TTL through raft so a new
// leader does not reset it (the lessor's Checkpointer).
func (s *Server) checkpointLease(ctx context.Context, cp *pb.LeaseCheckpointRequest) error {
	if !s.ensureLeadership(ctx) {
		return lease.ErrNotPrimary
	}
	if _, err := s.raftRequest(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: cp}); err != nil {
		s.lg.Warn("failed to checkpoint leases", zap.Error(err))
	}
	return nil
}
