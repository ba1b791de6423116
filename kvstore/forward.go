package kvstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/lease"
)

// forwardRetryDelay throttles retries of a forwarded request (etcd's 50 ms).
const forwardRetryDelay = 50 * time.Millisecond

// waitLeader waits until a leader is known (etcd's waitLeader).
func (s *Server) waitLeader(ctx context.Context) (types.ID, error) {
	for {
		if l := s.Leader(); l != 0 && s.cluster.Member(l) != nil {
			return l, nil
		}
		select {
		case <-time.After(s.cfg.HeartbeatInterval):
		case <-s.r.LeaderChangedNotify():
		case <-s.stopping:
			return 0, servererrors.ErrStopped
		case <-ctx.Done():
			return 0, servererrors.ErrNoLeader
		}
	}
}

// callMember runs method on member id: locally when it is us, otherwise
// through the peers.
func (s *Server) callMember(ctx context.Context, id types.ID, method uint8, req []byte) ([]byte, error) {
	if id == s.memberID {
		return s.localHandler(method)(ctx, "", req)
	}
	if _, ok := s.memberPeerURLs(id); !ok {
		return nil, errUnknownMember(id)
	}
	resp, err := s.peers.Call(ctx, uint64(id), method, req)
	return resp, fromRemote(err)
}

// forwardCtxErr is etcd's mapping of a forwarding loop's end.
func forwardCtxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return servererrors.ErrTimeout
	}
	return servererrors.ErrCanceled
}

// sleepCtx waits d unless ctx ends or the server stops first.
func (s *Server) sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	case <-s.stopping:
	}
}

// --- lease forwarding (etcd's leasehttp, client side) ---

// forwardAttempt is one try of a forwarded request to the member we take
// for the leader. A dead or unreachable leader never answers over the mesh
// (there is no connection to reset, unlike etcd's HTTP), so one try must
// not use up the caller's whole request timeout: it is abandoned after an
// election timeout (a live leader answers within milliseconds), or as soon
// as a new leader emerges (changed, taken before the leader was looked
// up), and the caller's loop waits for the leader and tries again.
func (s *Server) forwardAttempt(ctx context.Context, changed <-chan struct{}, lead types.ID, method uint8, req []byte) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.ElectionTimeout)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-changed:
			cancel()
		case <-s.stopping:
			cancel()
		case <-done:
		}
	}()
	resp, err := s.callMember(actx, lead, method, req)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		s.lg.Debug("forwarded request to the leader abandoned", zap.String("leader", lead.String()), zap.Uint8("method", method), zap.Error(err))
	}
	return resp, err
}

func (s *Server) forwardLeaseRenew(ctx context.Context, id lease.LeaseID) (int64, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req := binary.BigEndian.AppendUint64(nil, uint64(id))
	for cctx.Err() == nil {
		changed := s.r.LeaderChangedNotify()
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return -1, err
		}
		if err := s.withStores(func() error { return s.checkLeaseRenew(ctx, id) }); err != nil {
			return 0, err
		}
		resp, err := s.forwardAttempt(cctx, changed, lead, methodLeaseRenew, req)
		if err == nil {
			if len(resp) != 8 {
				return -1, fmt.Errorf("kvstore: malformed lease renew answer from %s", lead)
			}
			return int64(binary.BigEndian.Uint64(resp)), nil
		}
		if errors.Is(err, errNoPeers) {
			return -1, lease.ErrNotPrimary
		}
		if errors.Is(err, lease.ErrLeaseNotFound) || errors.Is(err, servererrors.ErrStopped) && lead == s.memberID {
			return -1, err
		}
		s.lg.Debug("forwarded lease renew failed; retrying", zap.String("leader", lead.String()), zap.Error(err))
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return -1, forwardCtxErr(cctx.Err())
}

func (s *Server) forwardLeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req, err := proto.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("kvstore: encode lease time-to-live request: %w", err)
	}
	for cctx.Err() == nil {
		changed := s.r.LeaderChangedNotify()
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return nil, err
		}
		b, err := s.forwardAttempt(cctx, changed, lead, methodLeaseTimeToLive, req)
		if err == nil {
			resp := &pb.LeaseTimeToLiveResponse{}
			if err := proto.Unmarshal(b, resp); err != nil {
				return nil, fmt.Errorf("kvstore: malformed lease time-to-live answer from %s: %w", lead, err)
			}
			resp.Header = s.newHeader()
			return resp, nil
		}
		if errors.Is(err, errNoPeers) {
			return nil, lease.ErrNotPrimary
		}
		if errors.Is(err, lease.ErrLeaseNotFound) {
			return nil, err
		}
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return nil, forwardCtxErr(cctx.Err())
}

// --- promotion (etcd forwards it to the leader over HTTP) ---

func (s *Server) forwardPromote(ctx context.Context, id uint64) ([]*Member, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.requestTimeout())
	defer cancel()
	req := binary.BigEndian.AppendUint64(nil, id)
	for cctx.Err() == nil {
		lead, err := s.waitLeader(cctx)
		if err != nil {
			return nil, err
		}
		b, err := s.callMember(cctx, lead, methodPromote, req)
		if err == nil {
			var ms []*Member
			if err := json.Unmarshal(b, &ms); err != nil {
				return nil, fmt.Errorf("kvstore: malformed promote answer from %s: %w", lead, err)
			}
			return ms, nil
		}
		if errors.Is(err, errNoPeers) {
			return nil, servererrors.ErrNotLeader
		}
		if errors.Is(err, servererrors.ErrLearnerNotReady) || errors.Is(err, membership.ErrIDNotFound) ||
			errors.Is(err, membership.ErrMemberNotLearner) || errors.Is(err, servererrors.ErrNotEnoughStartedMembers) {
			return nil, err
		}
		s.sleepCtx(cctx, forwardRetryDelay)
	}
	return nil, forwardCtxErr(cctx.Err())
}

// promoteLoop runs on a member that joined as a learner: it asks the
// leader to promote it until it is a voter or no longer a member.
func (s *Server) promoteLoop() {
	interval := max(s.cfg.ElectionTimeout, 500*time.Millisecond)
	for {
		select {
		case <-s.stopping:
			return
		case <-time.After(interval):
		}
		m := s.cluster.Member(s.memberID)
		if m == nil && s.cluster.IsIDRemoved(s.memberID) {
			return
		}
		if m != nil && !m.IsLearner {
			return // a voter (promoted, or it always was one)
		}
		if m == nil {
			continue // our own AddLearner is not applied yet
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.requestTimeout())
		_, err := s.forwardPromote(ctx, uint64(s.memberID))
		cancel()
		switch {
		case err == nil:
			s.lg.Info("promoted this learner to a voting member", zap.String("member-id", s.memberID.String()))
			return
		case errors.Is(err, membership.ErrMemberNotLearner):
			return
		default:
			s.lg.Debug("learner not promoted yet", zap.Error(err))
		}
	}
}
