package grpcapi

import (
	"bytes"
	"context"
	"math"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/meshetcd/meshetcd/kvstore"
)

// kvServer is etcd's KV service (v3rpc/key.go + quota.go): validate, check
// the space quota for writes, delegate to kvstore, fill the header.
type kvServer struct {
	pb.UnimplementedKVServer

	s   kvstore.API
	hdr header
	lg  *zap.Logger
	// maxTxnOps bounds each branch of a txn (compares, success, failure).
	maxTxnOps       uint
	maxRequestBytes uint
}

func newKVServer(s kvstore.API, cfg Config) *kvServer {
	return &kvServer{
		s:               s,
		hdr:             newHeader(s),
		lg:              cfg.Logger,
		maxTxnOps:       cfg.MaxTxnOps,
		maxRequestBytes: cfg.MaxRequestBytes,
	}
}

func (ks *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRangeRequest(r); err != nil {
		return nil, err
	}
	resp, err := ks.s.Range(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ks.hdr.fill(resp.Header)
	return resp, nil
}

func (ks *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	// etcd's order: the quota wrapper runs before validation.
	if err := checkQuota(ctx, ks.s, ks.lg, "kv", r); err != nil {
		return nil, err
	}
	if err := checkPutRequest(r); err != nil {
		return nil, err
	}
	if err := checkRequestSize(r, ks.maxRequestBytes); err != nil {
		return nil, err
	}
	resp, err := ks.s.Put(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ks.hdr.fill(resp.Header)
	return resp, nil
}

func (ks *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDeleteRequest(r); err != nil {
		return nil, err
	}
	if err := checkRequestSize(r, ks.maxRequestBytes); err != nil {
		return nil, err
	}
	resp, err := ks.s.DeleteRange(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ks.hdr.fill(resp.Header)
	return resp, nil
}

func (ks *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkQuota(ctx, ks.s, ks.lg, "kv", r); err != nil {
		return nil, err
	}
	if err := checkTxnRequest(r, int(ks.maxTxnOps)); err != nil {
		return nil, err
	}
	// Overlaps only after the op count is bounded, to avoid quadratic work
	// on a huge request.
	if err := checkTxnIntervals(r); err != nil {
		return nil, err
	}
	if err := checkRequestSize(r, ks.maxRequestBytes); err != nil {
		return nil, err
	}
	resp, err := ks.s.Txn(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ks.hdr.fill(resp.Header)
	return resp, nil
}

func (ks *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := isAdminPermitted(ctx, ks.s); err != nil {
		return nil, togRPCError(err)
	}
	resp, err := ks.s.Compact(ctx, r)
	if err != nil {
		return nil, togRPCError(err)
	}
	ensureHeader(&resp.Header)
	ks.hdr.fill(resp.Header)
	return resp, nil
}

// initialStreamChunkLimit is the first chunk's key count (etcd's value);
// later chunks adapt towards --max-request-bytes.
const initialStreamChunkLimit = 10

// RangeStream is etcd 3.7's streaming range: the result in key order, in
// chunks of about --max-request-bytes, all at one revision pinned by the
// first chunk; the last chunk carries the header, More and Count.
//
// etcd reads mvcc directly; we page through kvstore's serializable Range
// after one linearizable barrier, which gives the same result and keeps auth
// checks in one place.
func (ks *kvServer) RangeStream(r *pb.RangeRequest, rs pb.KV_RangeStreamServer) error {
	if err := checkRangeStreamRequest(r); err != nil {
		return err
	}
	ctx := rs.Context()
	if !r.Serializable {
		if err := ks.s.LinearizableReadNotify(ctx); err != nil {
			return togRPCError(err)
		}
	}
	if err := ks.rangeStream(ctx, proto.Clone(r).(*pb.RangeRequest), rs); err != nil {
		return togRPCError(err)
	}
	return nil
}

func (ks *kvServer) rangeStream(ctx context.Context, r *pb.RangeRequest, rs pb.KV_RangeStreamServer) error {
	r.Serializable = true
	if r.CountOnly {
		resp, err := ks.s.Range(ctx, r)
		if err != nil {
			return err
		}
		out := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: headerRevision(resp.Header)}, Count: resp.Count}
		ks.hdr.fillWithoutRevision(out.Header)
		return rs.Send(&pb.RangeStreamResponse{RangeResponse: out})
	}

	totalLimit := r.Limit
	if totalLimit == 0 {
		totalLimit = math.MaxInt64
	}
	r.Limit = min(int64(initialStreamChunkLimit), totalLimit)

	count := int64(0)
	var headerRev int64
	for {
		resp, err := ks.s.Range(ctx, r)
		if err != nil {
			return err
		}
		// Pin the revision seen by the first chunk so that writes committed
		// while streaming do not show up in later chunks.
		if headerRev == 0 {
			headerRev = headerRevision(resp.Header)
			if r.Revision == 0 {
				r.Revision = headerRev
			}
		}
		count += int64(len(resp.Kvs))

		var nextKey []byte
		if resp.More && len(resp.Kvs) > 0 {
			nextKey = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), '\x00')
		}
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := nextKey == nil || count == totalLimit
		if done {
			out.Header = &pb.ResponseHeader{Revision: headerRev}
			ks.hdr.fillWithoutRevision(out.Header)
			out.More = resp.More
			out.Count = count
			if resp.More && nextKey != nil {
				rest, err := ks.s.Range(ctx, &pb.RangeRequest{
					Key: nextKey, RangeEnd: r.RangeEnd, Revision: r.Revision,
					CountOnly: true, Serializable: true,
				})
				if err != nil {
					return err
				}
				out.Count += rest.Count
			}
		}
		if err := rs.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
			return err
		}
		if done {
			return nil
		}
		r.Key = nextKey
		r.Limit = adjustChunkLimit(r.Limit, proto.Size(resp), int(ks.maxRequestBytes))
		r.Limit = min(r.Limit, totalLimit-count)
	}
}

// adjustChunkLimit moves the next chunk's key count towards targetSize
// bytes, doubling or halving only outside [0.5x, 2x] to avoid thrashing
// (etcd's rule). It never returns 0, which would mean "unlimited".
func adjustChunkLimit(lastLimit int64, lastSize, targetSize int) int64 {
	switch {
	case lastSize < targetSize/2:
		lastLimit *= 2
	case lastSize > targetSize*2:
		lastLimit /= 2
	}
	if lastLimit == 0 {
		lastLimit = 1
	}
	return lastLimit
}

func headerRevision(h *pb.ResponseHeader) int64 {
	if h == nil {
		return 0
	}
	return h.Revision
}

// ensureHeader gives a response a header if kvstore returned none, so that
// fill never sees nil.
func ensureHeader(h **pb.ResponseHeader) {
	if *h == nil {
		*h = &pb.ResponseHeader{}
	}
}
