package grpcapi

import (
	"context"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3"

	"github.com/meshetcd/meshetcd/kvstore"
)

const (
	// maxNoLeaderCnt is how many election timeouts without a leader a stream
	// that required one survives (etcd's value): reconnecting streams costs
	// much more than rejecting new requests, so existing ones get slack.
	maxNoLeaderCnt = 3
	snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"
)

// isRPCSupportedForLearner is etcd's rule: a learner serves serializable
// reads and Status, nothing else.
func isRPCSupportedForLearner(req any) bool {
	switch r := req.(type) {
	case *pb.StatusRequest:
		return true
	case *pb.RangeRequest:
		return r.Serializable
	default:
		return false
	}
}

// requiresLeader reports whether the client asked (clientv3.WithRequireLeader)
// that the request fail when the member has no leader.
func requiresLeader(md metadata.MD) bool {
	return isRequireLeader(md[rpctypes.MetadataRequireLeaderKey])
}

// isRequireLeader is requiresLeader on the metadata's values for
// rpctypes.MetadataRequireLeaderKey.
func isRequireLeader(ks []string) bool {
	return len(ks) > 0 && ks[0] == rpctypes.MetadataHasLeader
}

// checkClientAPIVersion rejects a client version header that is not UTF-8
// and counts the request per client version, like etcd.
func checkClientAPIVersion(md metadata.MD, kind string, m grpcMetrics) error {
	return countClientAPIVersion(md.Get(rpctypes.MetadataClientAPIVersionKey), kind, m)
}

// countClientAPIVersion is checkClientAPIVersion on the metadata's values
// for rpctypes.MetadataClientAPIVersionKey.
func countClientAPIVersion(vs []string, kind string, m grpcMetrics) error {
	ver := "unknown"
	if len(vs) > 0 {
		ver = vs[0]
	}
	if !utf8.ValidString(ver) {
		return rpctypes.ErrGRPCInvalidClientAPIVersion
	}
	m.countClientRequest(kind, ver)
	return nil
}

func newUnaryInterceptor(s kvstore.Info, m grpcMetrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.IsLearner() && !isRPCSupportedForLearner(req) {
			return nil, rpctypes.ErrGRPCNotSupportedForLearner
		}
		// Two single-key lookups instead of FromIncomingContext, which
		// copies the whole metadata map on every request. gRPC always
		// attaches incoming metadata, so "no metadata" does not occur here.
		if err := countClientAPIVersion(metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataClientAPIVersionKey), "unary", m); err != nil {
			return nil, err
		}
		if isRequireLeader(metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey)) && s.Leader() == types.ID(raft.None) {
			return nil, rpctypes.ErrGRPCNoLeader
		}
		return handler(ctx, req)
	}
}

func newStreamInterceptor(s kvstore.Info, cfg Config, m grpcMetrics) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		// A learner serves no stream but Snapshot (etcd's rule).
		if s.IsLearner() && info.FullMethod != snapshotMethod {
			return rpctypes.ErrGRPCNotSupportedForLearner
		}
		md, ok := metadata.FromIncomingContext(ss.Context())
		if !ok {
			return handler(srv, ss)
		}
		if err := checkClientAPIVersion(md, "stream", m); err != nil {
			return err
		}
		if !requiresLeader(md) {
			return handler(srv, ss)
		}
		if s.Leader() == types.ID(raft.None) {
			return rpctypes.ErrGRPCNoLeader
		}
		ctx := newCancellableContext(ss.Context())
		defer ctx.Cancel(nil)
		// The monitor belongs to this stream: it stops when the handler
		// returns (etcd runs one server-wide monitor instead; a per-stream
		// one needs no owner beyond the stream itself).
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			monitorLeader(s, cfg.ElectionTimeout, ctx, done)
		}()
		defer wg.Wait()
		defer close(done)
		return handler(srv, serverStreamWithCtx{ServerStream: ss, ctx: ctx})
	}
}

// monitorLeader cancels ctx with ErrGRPCNoLeader once the member has had no
// leader for maxNoLeaderCnt consecutive election timeouts. It returns when
// done is closed, ctx ends, or it cancelled ctx.
func monitorLeader(s kvstore.Info, election time.Duration, ctx *cancellableContext, done <-chan struct{}) {
	t := time.NewTicker(election)
	defer t.Stop()
	noLeaderCnt := 0
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if s.Leader() == types.ID(raft.None) {
				noLeaderCnt++
			} else {
				noLeaderCnt = 0
			}
			if noLeaderCnt >= maxNoLeaderCnt {
				ctx.Cancel(rpctypes.ErrGRPCNoLeader)
				return
			}
		}
	}
}

// cancellableContext is a context whose Err reports why it was cancelled, so
// a stream handler can return ErrGRPCNoLeader rather than "context canceled"
// (same idea as etcd's).
type cancellableContext struct {
	context.Context

	mu           sync.RWMutex
	cancel       context.CancelFunc
	cancelReason error
}

func newCancellableContext(parent context.Context) *cancellableContext {
	ctx, cancel := context.WithCancel(parent)
	return &cancellableContext{Context: ctx, cancel: cancel}
}

// Cancel records reason (if the context is not already cancelled) and
// cancels.
func (c *cancellableContext) Cancel(reason error) {
	c.mu.Lock()
	if c.cancelReason == nil && c.Context.Err() == nil {
		c.cancelReason = reason
	}
	c.mu.Unlock()
	c.cancel()
}

// Err returns the recorded reason, if any, else the underlying error.
func (c *cancellableContext) Err() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.cancelReason != nil {
		return c.cancelReason
	}
	return c.Context.Err()
}

type serverStreamWithCtx struct {
	grpc.ServerStream
	ctx *cancellableContext
}

func (ssc serverStreamWithCtx) Context() context.Context { return ssc.ctx }

// newLogUnaryInterceptor logs every unary request at debug level, and at warn
// level when it took longer than cfg.WarningUnaryRequestDuration, with the
// fields etcd logs (values of puts are redacted like etcd's).
func newLogUnaryInterceptor(cfg Config) grpc.UnaryServerInterceptor {
	lg := cfg.Logger
	warn := cfg.WarningUnaryRequestDuration
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		took := time.Since(start)
		debug := lg.Core().Enabled(zap.DebugLevel)
		if !debug && took <= warn {
			return resp, err
		}
		fields := requestStatsFields(ctx, info.FullMethod, start, took, req, resp)
		if err != nil {
			fields = append(fields, zap.Error(err))
		}
		if took > warn {
			lg.Warn("request stats", fields...)
		} else {
			lg.Debug("request stats", fields...)
		}
		return resp, err
	}
}

func requestStatsFields(ctx context.Context, method string, start time.Time, took time.Duration, req, resp any) []zap.Field {
	remote := "No remote client info."
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	var reqCount, respCount int64 = -1, -1
	reqSize, respSize := -1, -1
	var reqContent string
	switch r := resp.(type) {
	case *pb.RangeResponse:
		if q, ok := req.(*pb.RangeRequest); ok {
			reqCount, reqSize, reqContent = 0, proto.Size(q), q.String()
		}
		if r != nil {
			respCount, respSize = r.GetCount(), proto.Size(r)
		}
	case *pb.PutResponse:
		if q, ok := req.(*pb.PutRequest); ok {
			reqCount, reqSize, reqContent = 1, proto.Size(q), pb.NewLoggablePutRequest(q).String()
		}
		if r != nil {
			respCount, respSize = 0, proto.Size(r)
		}
	case *pb.DeleteRangeResponse:
		if q, ok := req.(*pb.DeleteRangeRequest); ok {
			reqCount, reqSize, reqContent = 0, proto.Size(q), q.String()
		}
		if r != nil {
			respCount, respSize = r.GetDeleted(), proto.Size(r)
		}
	case *pb.TxnResponse:
		if q, ok := req.(*pb.TxnRequest); ok && r != nil {
			ops := q.GetFailure()
			if r.GetSucceeded() {
				ops = q.GetSuccess()
			}
			reqCount, reqSize = int64(len(ops)), 0
			for _, op := range ops {
				reqSize += proto.Size(op)
			}
			reqContent = pb.NewLoggableTxnRequest(q).String()
		}
		if r != nil {
			respCount, respSize = 0, proto.Size(r)
		}
	}
	return []zap.Field{
		zap.Time("start time", start),
		zap.Duration("time spent", took),
		zap.String("remote", remote),
		zap.String("response type", method),
		zap.Int64("request count", reqCount),
		zap.Int("request size", reqSize),
		zap.Int64("response count", respCount),
		zap.Int("response size", respSize),
		zap.String("request content", reqContent),
	}
}
