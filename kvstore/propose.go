package kvstore

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
)

// maxGapBetweenApplyAndCommitIndex is etcd's limit on how far apply may lag
// behind commit before new proposals are refused.
const maxGapBetweenApplyAndCommitIndex = 5000

// raftRequest proposes r and returns the applied response, or the error the
// apply produced.
func (s *Server) raftRequest(ctx context.Context, r *pb.InternalRaftRequest) (proto.Message, error) {
	result, err := s.processInternalRaftRequestOnce(ctx, r)
	if err != nil {
		return nil, err
	}
	if result.Err != nil {
		return nil, result.Err
	}
	return result.Resp, nil
}

// processInternalRaftRequestOnce is etcd's propose-and-wait: a
// cluster-unique id, the caller's auth identity in the header, size and
// backlog limits, and a waiter that every failure path frees.
func (s *Server) processInternalRaftRequestOnce(ctx context.Context, r *pb.InternalRaftRequest) (_ *apply.Result, err error) {
	if s.r.CommittedIndex() > s.AppliedIndex()+maxGapBetweenApplyAndCommitIndex {
		return nil, servererrors.ErrTooManyRequests
	}
	r.Header = &pb.RequestHeader{ID: s.reqIDGen.Next()}
	// Authenticate carries no token yet; everything else is checked at
	// apply time against the proposer's identity.
	if r.Authenticate == nil {
		ai, err := s.AuthInfoFromCtx(ctx)
		if err != nil {
			return nil, err
		}
		if ai != nil {
			r.Header.Username = ai.Username
			r.Header.AuthRevision = ai.Revision
		}
	}
	defer func(start time.Time) { s.metrics.observeRequest(requestType(r), start, err) }(time.Now())
	// Every copy of this request carries the commit index of now; apply
	// refuses copies committed more than dedupeWindow entries later (see
	// isDuplicate), so no copy can outlive the record of the original.
	firstCommit := s.r.CommittedIndex()
	data, size, err := marshalProposal(r, firstCommit)
	if err != nil {
		return nil, err
	}
	if size > int(s.cfg.MaxRequestBytes) {
		return nil, servererrors.ErrRequestTooLarge
	}
	id := r.ID
	if id == 0 {
		id = r.Header.ID
	}
	ch := s.w.Register(id)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	// Taken before proposing, so a change while the proposal travels counts.
	leaderChanged, routeChanged := s.proposalLossNotify()
	last := pendingCopy{id: id}
	// Our view of term and leader before Propose: see proposalRetry.
	term, leader := s.r.Term(), s.isLeader()
	if err := s.r.Propose(cctx, data); err != nil {
		s.metrics.proposalsFailed.Inc()
		s.w.Trigger(id, nil) // free the waiter
		if cctx.Err() != nil {
			return nil, s.parseProposeCtxErr(cctx.Err(), start)
		}
		return nil, err
	}
	last.proposed(term, leader)
	s.metrics.proposalsPend.Inc()
	defer s.metrics.proposalsPend.Dec()
	// Raft never resends a proposal the network lost (a follower's MsgProp
	// dropped by the mesh, queued on a link that died, or taken by a leader
	// that lost office before replicating it), and no later event is
	// guaranteed to tell us. So while the request waits, a timer checks for
	// evidence that its last copy is lost (proposalRetry) and proposes it
	// again if so. If several copies commit, every member applies the
	// first and skips the others (dedupe.go).
	//
	// A leader's own copy is in its log: only a leader change can lose it,
	// and leaderChanged says so. So its timer is armed only then, and
	// route events are not listened to: a select over fewer channels and
	// no timer per request on the leader (the select and the timer were
	// ~6% of a one-member put's CPU).
	rt := newRetryTimer(s.cfg.HeartbeatInterval, s.cfg.ElectionTimeout, !last.asLeader)
	defer rt.stop()
	for {
		routeC := routeChanged
		if last.asLeader {
			routeC = nil
		}
		select {
		case x := <-ch:
			if x == nil {
				// Only Stop-time cleanup triggers nil for a live request.
				return nil, servererrors.ErrStopped
			}
			s.retry.observe(&last, time.Since(start))
			return x.(*apply.Result), nil
		case <-leaderChanged:
			leaderChanged, routeChanged = s.proposalLossNotify()
			last.lossEvent = true
			rt.soon()
			continue
		case <-routeC:
			leaderChanged, routeChanged = s.proposalLossNotify()
			// A forwarded copy may have been queued on a link that died
			// (a partition that re-routes, a cut): waiting for the other
			// evidence stalled clients of such members for over 2 s.
			last.lossEvent = true
			rt.soon()
			continue
		case <-rt.C():
		case <-cctx.Done():
			s.metrics.proposalsFailed.Inc()
			s.w.Trigger(id, nil)
			return nil, s.parseProposeCtxErr(cctx.Err(), start)
		case <-s.stopping:
			s.w.Trigger(id, nil)
			return nil, servererrors.ErrStopped
		}
		rt.fired()
		// A copy committed beyond firstCommit+dedupeWindow is refused at
		// apply; stop retrying while a new copy still has room to commit.
		if s.r.CommittedIndex()-firstCommit > maxRetryEntries {
			continue
		}
		term, leader := s.r.Term(), s.isLeader()
		reason, recheck := s.retry.retryReason(&last, term, leader)
		if recheck {
			rt.soon()
		}
		if reason == "" {
			if !last.asLeader {
				// Check again when the copy's timeout is due. The timer's
				// own period can end a hair before it (the copy is
				// stamped after the timer is re-armed), and waiting a
				// whole period more held a copy lost while routes settled
				// for 2 s instead of 1 s (TestPartialLineOfFiveLeaderInMiddle).
				rt.within(time.Until(s.retry.timeoutDue(&last)))
			}
			continue
		}
		s.metrics.proposalsRetried.WithLabelValues(reason).Inc()
		s.lg.Debug("re-proposing a pending request", zap.Uint64("request-id", id), zap.String("reason", reason),
			zap.Duration("pending", time.Since(start)))
		if err := s.r.Propose(cctx, data); err != nil {
			s.lg.Debug("re-proposing a pending request failed", zap.Uint64("request-id", id), zap.Error(err))
		}
		last.proposed(term, leader)
	}
}

// maxRetryEntries: a request is re-proposed only while fewer entries than
// this were committed since it was first proposed, leaving a quarter of
// dedupeWindow for the last copy to commit before apply would refuse it
// (a budget of ~3 s at 30k writes/s, far more at ordinary rates).
const maxRetryEntries = dedupeWindow * 3 / 4

// retryTimer schedules the checks for a lost copy of a pending request: the
// first after 5 heartbeats (a commit normally takes a few milliseconds),
// then backing off to the election timeout; a leader or route change
// brings the next one forward to one heartbeat from now (coalescing bursts
// of events and leaving the new route or leader a moment to settle).
//
// An unarmed retryTimer (armed false) has no timer until soon or within
// arms it; its C is nil until then.
type retryTimer struct {
	t           *time.Timer // nil: not armed yet
	hb, next, c time.Duration
	due         time.Time
}

func newRetryTimer(heartbeat, election time.Duration, armed bool) retryTimer {
	first := 5 * heartbeat
	if first > election {
		first = election
	}
	r := retryTimer{hb: heartbeat, next: first, c: election}
	if armed {
		r.t = time.NewTimer(first)
		r.due = time.Now().Add(first)
	}
	return r
}

func (r *retryTimer) C() <-chan time.Time {
	if r.t == nil {
		return nil
	}
	return r.t.C
}

// soon moves the next retry to one heartbeat from now unless it is due
// sooner already.
func (r *retryTimer) soon() { r.within(r.hb) }

// within moves the next retry to d from now unless it is due sooner
// already.
func (r *retryTimer) within(d time.Duration) {
	at := time.Now().Add(d)
	if r.t == nil {
		r.t = time.NewTimer(d)
		r.due = at
		return
	}
	if at.After(r.due) {
		return
	}
	r.t.Stop()
	r.t.Reset(d)
	r.due = at
}

// fired arms the timer for the retry after the one being made now.
func (r *retryTimer) fired() {
	r.next *= 2
	if r.next > r.c {
		r.next = r.c
	}
	r.t.Reset(r.next)
	r.due = time.Now().Add(r.next)
}

func (r *retryTimer) stop() {
	if r.t != nil {
		r.t.Stop()
	}
}

// proposalLossNotify returns channels closed at the next leader change and,
// over the mesh, the next route change: the events after which a pending
// proposal may have been lost.
func (s *Server) proposalLossNotify() (leader, route <-chan struct{}) {
	return s.r.LeaderChangedNotify(), s.peers.RouteChangedNotify()
}

// parseProposeCtxErr maps a proposal's context error like etcd does.
func (s *Server) parseProposeCtxErr(err error, start time.Time) error {
	switch {
	case errors.Is(err, context.Canceled):
		return servererrors.ErrCanceled
	case errors.Is(err, context.DeadlineExceeded):
		elected := time.Unix(0, s.leadElectedTime.Load())
		prevLeadLost := elected.Add(-2 * s.cfg.ElectionTimeout)
		if start.After(prevLeadLost) && start.Before(elected) {
			return servererrors.ErrTimeoutDueToLeaderFail
		}
		return servererrors.ErrTimeout
	default:
		return err
	}
}

// doSerialize runs a local read with etcd's auth protocol: check
// permission, read, and fail if the auth store changed meanwhile.
func (s *Server) doSerialize(ctx context.Context, chk func(*auth.AuthInfo) error, get func()) error {
	ai, err := s.AuthInfoFromCtx(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{} // chk expects non-nil AuthInfo
	}
	if err := chk(ai); err != nil {
		return err
	}
	get()
	if ai.Revision != 0 && ai.Revision != s.authStore.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// requireAuthInfo fails requests without credentials when auth is on.
func (s *Server) requireAuthInfo(ctx context.Context) error {
	if !s.authStore.IsAuthEnabled() {
		return nil
	}
	ai, err := s.AuthInfoFromCtx(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	return nil
}
