package kvstore

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
)

// Range serves reads locally, after a ReadIndex barrier unless the request
// is serializable (etcd v3_server.go).
func (s *Server) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	var resp *pb.RangeResponse
	var err error
	defer func(start time.Time) { s.metrics.observeRequest("Range", start, err) }(time.Now())
	if !r.Serializable {
		if err = s.LinearizableReadNotify(ctx); err != nil {
			return nil, err
		}
	}
	chk := func(ai *auth.AuthInfo) error { return s.authStore.IsRangePermitted(ai, r.Key, r.RangeEnd) }
	get := func() { resp, _, err = txn.Range(ctx, s.lg, s.KV(), r, true) }
	if serr := s.doSerialize(ctx, chk, get); serr != nil {
		err = serr
		return nil, err
	}
	return resp, err
}

// Put proposes a put through raft.
func (s *Server) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := s.raftRequest(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.PutResponse), nil
}

// DeleteRange proposes a delete through raft.
func (s *Server) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := s.raftRequest(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.DeleteRangeResponse), nil
}

// Txn serves read-only transactions locally (after a ReadIndex barrier
// unless every range is serializable) and proposes the rest.
func (s *Server) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	if txn.IsTxnReadonly(r) {
		var resp *pb.TxnResponse
		var err error
		defer func(start time.Time) { s.metrics.observeRequest("ReadonlyTxn", start, err) }(time.Now())
		if !txn.IsTxnSerializable(r) {
			if err = s.LinearizableReadNotify(ctx); err != nil {
				return nil, err
			}
		}
		chk := func(ai *auth.AuthInfo) error { return apply.CheckTxnAuth(s.authStore, ai, s.lessor, r) }
		get := func() { resp, _, err = txn.Txn(ctx, s.lg, r, false, s.KV(), s.lessor, false) }
		if serr := s.doSerialize(ctx, chk, get); serr != nil {
			err = serr
			return nil, err
		}
		return resp, err
	}
	resp, err := s.raftRequest(ctx, &pb.InternalRaftRequest{Txn: r})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.TxnResponse), nil
}

// Compact proposes a compaction; with Physical it also waits until the old
// revisions are gone from the backend and that is committed.
func (s *Server) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	release, uerr := s.useStores()
	if uerr != nil {
		return nil, uerr
	}
	defer release()
	result, err := s.processInternalRaftRequestOnce(ctx, &pb.InternalRaftRequest{Compaction: r})
	if r.Physical && result != nil && result.Physc != nil {
		select {
		case <-result.Physc:
		case <-s.stopping:
			return nil, errStoppedOr(err)
		}
		// Commit the finished compaction so a crash does not resume it
		// and change the hash.
		s.Backend().ForceCommit()
	}
	if err != nil {
		return nil, err
	}
	if result.Err != nil {
		return nil, result.Err
	}
	resp, _ := result.Resp.(*pb.CompactionResponse)
	if resp == nil {
		resp = &pb.CompactionResponse{}
	}
	if resp.Header == nil {
		resp.Header = &pb.ResponseHeader{}
	}
	resp.Header.Revision = s.kv.Rev()
	return resp, nil
}
