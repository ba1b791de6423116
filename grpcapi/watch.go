package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshetcd/meshetcd/kvstore"
)

// The Watch service reproduces etcd 3.7.3's serverWatchStream
// (server/etcdserver/api/v3rpc/watch.go) on top of kvstore's mvcc.WatchableKV.
// The mvcc watchable store does the hard part (synced/unsynced/victim
// watchers, so a slow stream never blocks writers or other streams); this
// file only translates between the gRPC stream and one mvcc.WatchStream.

const (
	// DefaultWatchProgressNotifyInterval is etcd's default
	// --experimental-watch-progress-notify-interval.
	DefaultWatchProgressNotifyInterval = 10 * time.Minute
	// minWatchProgressInterval is the floor etcd clamps the interval to.
	minWatchProgressInterval = 100 * time.Millisecond

	// ctrlStreamBufLen bounds created/canceled replies queued by the receive
	// loop for the send loop, as in etcd: control requests are rare, and a
	// full buffer just makes the receive loop wait for the sender.
	ctrlStreamBufLen = 16
)

// watchConfig is what the Watch service needs from the server configuration.
type watchConfig struct {
	// maxRequestBytes is the fragmentation threshold: --max-request-bytes
	// plus grpcOverheadBytes, as etcd's MaxRequestBytesWithOverhead.
	maxRequestBytes uint
	// progressInterval is the base progress-notify period (before jitter).
	progressInterval time.Duration
	metrics          watchMetrics
}

// newWatchConfig applies etcd's defaults and clamping.
func newWatchConfig(lg *zap.Logger, maxRequestBytes uint, progressInterval time.Duration) watchConfig {
	if progressInterval <= 0 {
		progressInterval = DefaultWatchProgressNotifyInterval
	}
	if progressInterval < minWatchProgressInterval {
		lg.Warn("adjusting watch progress notify interval to minimum period",
			zap.Duration("min-watch-progress-notify-interval", minWatchProgressInterval))
		progressInterval = minWatchProgressInterval
	}
	return watchConfig{
		maxRequestBytes:  maxRequestBytes + grpcOverheadBytes,
		progressInterval: progressInterval,
		metrics:          newWatchMetrics(),
	}
}

// jitteredInterval adds up to 10% jitter so that streams created together
// (a client restart re-creates all of them at once) do not ask for progress
// at the same moment; etcd's GetProgressReportInterval does the same.
func (c watchConfig) jitteredInterval() time.Duration {
	return c.progressInterval + time.Duration(rand.Int64N(int64(c.progressInterval)/10+1))
}

type watchServer struct {
	pb.UnimplementedWatchServer

	lg  *zap.Logger
	s   kvstore.API
	hdr header
	cfg watchConfig
}

func newWatchServer(lg *zap.Logger, s kvstore.API, cfg watchConfig) *watchServer {
	return &watchServer{lg: lg, s: s, hdr: newHeader(s), cfg: cfg}
}

// serverWatchStream is the state of one gRPC Watch stream. The receive loop
// turns requests into mvcc calls and control replies; the send loop is the
// only writer to the gRPC stream.
type serverWatchStream struct {
	lg  *zap.Logger
	s   kvstore.API
	hdr header
	cfg watchConfig

	gRPCStream  pb.Watch_WatchServer
	watchStream mvcc.WatchStream
	// ctrlStream carries created/canceled replies from the receive loop to
	// the send loop, so that all sends happen on one goroutine in order.
	ctrlStream chan *pb.WatchResponse

	// mu guards the per-watch option maps below, shared by both loops.
	mu sync.Mutex
	// progress: watch ids that asked for progress notifications; the value
	// is false when an event was sent since the last tick (no notify needed).
	progress map[mvcc.WatchID]bool
	prevKV   map[mvcc.WatchID]bool
	fragment map[mvcc.WatchID]bool

	// closec is closed when the handler is returning; both loops stop.
	closec chan struct{}
	// sendDone is closed when the send loop has returned.
	sendDone chan struct{}
}

// Watch serves one bidirectional watch stream. It returns when the client
// closes its side, the stream's context ends, or a send fails; the send loop
// is joined before returning and the receive loop ends as soon as gRPC tears
// the stream down (Recv then fails), which happens when this handler returns.
func (ws *watchServer) Watch(stream pb.Watch_WatchServer) error {
	sws := &serverWatchStream{
		lg:          ws.lg,
		s:           ws.s,
		hdr:         ws.hdr,
		cfg:         ws.cfg,
		gRPCStream:  stream,
		watchStream: ws.s.KV().NewWatchStream(),
		ctrlStream:  make(chan *pb.WatchResponse, ctrlStreamBufLen),
		progress:    make(map[mvcc.WatchID]bool),
		prevKV:      make(map[mvcc.WatchID]bool),
		fragment:    make(map[mvcc.WatchID]bool),
		closec:      make(chan struct{}),
		sendDone:    make(chan struct{}),
	}

	go func() {
		defer close(sws.sendDone)
		sws.sendLoop()
	}()

	errc := make(chan error, 1)
	go func() {
		// A client that half-closes its send side (io.EOF, recvLoop returns
		// nil) still wants its events: like etcd, the stream then lives
		// until its context ends. errc is buffered, so this goroutine never
		// blocks after the handler has returned.
		if rerr := sws.recvLoop(); rerr != nil {
			errc <- rerr
		}
	}()

	var err error
	select {
	case err = <-errc:
		if err != nil && !isClientCtxErr(stream.Context().Err(), err) {
			sws.lg.Warn("failed to receive watch request from gRPC stream", zap.Error(err))
		}
		// The receive loop is gone, so nobody else writes ctrlStream;
		// closing it lets the send loop flush queued replies and stop.
		close(sws.ctrlStream)
	case <-stream.Context().Done():
		// Also the path after a failed send: gRPC cancels the context of a
		// broken stream.
		err = stream.Context().Err()
	}
	if errors.Is(err, context.Canceled) {
		err = rpctypes.ErrGRPCWatchCanceled
	}

	sws.close()
	return err
}

func (sws *serverWatchStream) close() {
	// Closing the mvcc stream cancels every watcher and closes Chan(), which
	// the send loop drains before it returns.
	sws.watchStream.Close()
	close(sws.closec)
	<-sws.sendDone
}

func (sws *serverWatchStream) newResponseHeader(rev int64) *pb.ResponseHeader {
	// The revision is the one the event or reply is about, not the live
	// store revision.
	h := &pb.ResponseHeader{Revision: rev}
	sws.hdr.fillWithoutRevision(h)
	return h
}

// isWatchPermitted is etcd's create-time RBAC check: a watch needs read
// permission on its whole range.
func (sws *serverWatchStream) isWatchPermitted(wcr *pb.WatchCreateRequest) error {
	authInfo, err := sws.s.AuthInfoFromCtx(sws.gRPCStream.Context())
	if err != nil {
		return err
	}
	if authInfo == nil {
		// With auth enabled, an empty AuthInfo makes IsRangePermitted fail
		// with ErrUserEmpty, as in etcd.
		authInfo = &auth.AuthInfo{}
	}
	return sws.s.AuthStore().IsRangePermitted(authInfo, wcr.Key, wcr.RangeEnd)
}

// sendCtrl queues a control reply; false means the stream is closing.
func (sws *serverWatchStream) sendCtrl(wr *pb.WatchResponse) bool {
	select {
	case sws.ctrlStream <- wr:
		return true
	case <-sws.closec:
		return false
	}
}

func (sws *serverWatchStream) recvLoop() error {
	for {
		req, err := sws.gRPCStream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}

		switch uv := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if uv.CreateRequest == nil {
				break
			}
			if !sws.create(uv.CreateRequest) {
				return nil
			}
		case *pb.WatchRequest_CancelRequest:
			if uv.CancelRequest == nil {
				break
			}
			if !sws.cancel(uv.CancelRequest.WatchId) {
				return nil
			}
		case *pb.WatchRequest_ProgressRequest:
			if uv.ProgressRequest != nil {
				sws.mu.Lock()
				sws.watchStream.RequestProgressAll()
				sws.mu.Unlock()
			}
		default:
			// etcd ignores unknown request kinds rather than failing the
			// whole stream (a newer client may send something we lack).
			sws.lg.Info("invalid watch request type received in gRPC stream",
				zap.String("type", fmt.Sprintf("%T", uv)))
		}
	}
}

// create handles a WatchCreateRequest; false means the stream is closing.
func (sws *serverWatchStream) create(creq *pb.WatchCreateRequest) bool {
	if len(creq.Key) == 0 {
		// "\x00" is the smallest key: an empty key means "from the start".
		creq.Key = []byte{0}
	}
	if creq.StartRevision < 0 {
		// etcd answers a negative start revision with a created+canceled
		// reply carrying the compacted error text, not a stream error.
		return sws.sendCtrl(&pb.WatchResponse{
			Header:       sws.newResponseHeader(sws.watchStream.Rev()),
			WatchId:      clientv3.InvalidWatchID,
			Created:      true,
			Canceled:     true,
			CancelReason: rpctypes.ErrCompacted.Error(),
		})
	}
	if err := sws.isWatchPermitted(creq); err != nil {
		return sws.sendCtrl(&pb.WatchResponse{
			Header:       sws.newResponseHeader(sws.watchStream.Rev()),
			WatchId:      clientv3.InvalidWatchID,
			Created:      true,
			Canceled:     true,
			CancelReason: watchAuthCancelReason(sws.lg, err),
		})
	}
	creq.RangeEnd = normalizeWatchRangeEnd(creq.RangeEnd)

	id, err := sws.watchStream.Watch(sws.gRPCStream.Context(), mvcc.WatchID(creq.WatchId),
		creq.Key, creq.RangeEnd, creq.StartRevision, filtersFromRequest(creq)...)
	if err == nil {
		sws.mu.Lock()
		if creq.ProgressNotify {
			sws.progress[id] = true
		}
		if creq.PrevKv {
			sws.prevKV[id] = true
		}
		if creq.Fragment {
			sws.fragment[id] = true
		}
		sws.mu.Unlock()
	} else {
		id = clientv3.InvalidWatchID
	}
	wr := &pb.WatchResponse{
		Header:   sws.newResponseHeader(sws.watchStream.Rev()),
		WatchId:  int64(id),
		Created:  true,
		Canceled: err != nil,
	}
	if err != nil {
		// e.g. mvcc's duplicate-id and empty-range errors, verbatim as etcd.
		wr.CancelReason = err.Error()
	}
	return sws.sendCtrl(wr)
}

// cancel handles a WatchCancelRequest; false means the stream is closing.
// Cancelling an unknown id is silently ignored, exactly like etcd.
func (sws *serverWatchStream) cancel(id int64) bool {
	if err := sws.watchStream.Cancel(mvcc.WatchID(id)); err != nil {
		return true
	}
	if !sws.sendCtrl(&pb.WatchResponse{
		Header:   sws.newResponseHeader(sws.watchStream.Rev()),
		WatchId:  id,
		Canceled: true,
	}) {
		return false
	}
	sws.mu.Lock()
	delete(sws.progress, mvcc.WatchID(id))
	delete(sws.prevKV, mvcc.WatchID(id))
	delete(sws.fragment, mvcc.WatchID(id))
	sws.mu.Unlock()
	return true
}

// watchAuthCancelReason maps a permission-check failure to the text etcd
// puts in CancelReason.
func watchAuthCancelReason(lg *zap.Logger, err error) string {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error()
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error()
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error()
	default:
		if !errors.Is(err, auth.ErrPermissionDenied) {
			lg.Error("unexpected error code", zap.Error(err))
		}
		return rpctypes.ErrGRPCPermissionDenied.Error()
	}
}

func (sws *serverWatchStream) sendLoop() {
	// ids whose "created" reply has been sent.
	ids := make(map[mvcc.WatchID]struct{})
	// Responses for ids whose "created" reply is still queued in ctrlStream:
	// the client must see "created" first. Bounded by mvcc's per-stream
	// channel (128) times the short window between Watch and the reply.
	pending := make(map[mvcc.WatchID][]*pb.WatchResponse)

	progressTicker := time.NewTicker(sws.cfg.jitteredInterval())
	defer func() {
		progressTicker.Stop()
		// Drain until close() has closed the mvcc channel, so that the
		// watchable store never sees a stuck receiver.
		for range sws.watchStream.Chan() {
		}
	}()

	for {
		select {
		case wresp, ok := <-sws.watchStream.Chan():
			if !ok {
				return
			}
			start := time.Now()
			wr := sws.toWatchResponse(wresp)

			// Progress notifications for the whole stream (RequestProgressAll)
			// carry WatchID -1 and need no created reply.
			if wresp.WatchID != clientv3.InvalidWatchID {
				if _, okID := ids[wresp.WatchID]; !okID {
					pending[wresp.WatchID] = append(pending[wresp.WatchID], wr)
					continue
				}
			}

			sws.mu.Lock()
			_, fragmented := sws.fragment[wresp.WatchID]
			sws.mu.Unlock()
			var serr error
			if fragmented {
				serr = sendFragments(wr, sws.cfg.maxRequestBytes, sws.gRPCStream.Send)
			} else {
				serr = sws.gRPCStream.Send(wr)
			}
			if serr != nil {
				sws.logSendErr("failed to send watch response to gRPC stream", serr)
				return
			}

			sws.mu.Lock()
			if len(wresp.Events) > 0 && sws.progress[wresp.WatchID] {
				// An event just told the client how far we are: skip the
				// next progress notification for this watcher.
				sws.progress[wresp.WatchID] = false
			}
			sws.mu.Unlock()
			sws.cfg.metrics.observeEvents(start, len(wresp.Events))

		case c, ok := <-sws.ctrlStream:
			if !ok {
				return
			}
			start := time.Now()
			if err := sws.gRPCStream.Send(c); err != nil {
				sws.logSendErr("failed to send watch control response to gRPC stream", err)
				return
			}
			wid := mvcc.WatchID(c.WatchId)
			if c.Canceled && wid != clientv3.InvalidWatchID {
				delete(ids, wid)
				continue
			}
			if c.Created {
				ids[wid] = struct{}{}
				for _, v := range pending[wid] {
					// etcd sends buffered responses unfragmented; so do we.
					if err := sws.gRPCStream.Send(v); err != nil {
						sws.logSendErr("failed to send pending watch response to gRPC stream", err)
						return
					}
				}
				delete(pending, wid)
			}
			sws.cfg.metrics.control.Observe(time.Since(start).Seconds())

		case <-progressTicker.C:
			start := time.Now()
			sws.mu.Lock()
			for id, ok := range sws.progress {
				if ok {
					sws.watchStream.RequestProgress(id)
				}
				sws.progress[id] = true
			}
			sws.mu.Unlock()
			sws.cfg.metrics.progress.Observe(time.Since(start).Seconds())

		case <-sws.closec:
			return
		}
	}
}

// toWatchResponse converts an mvcc response, attaching previous key-values
// for watchers that asked for them.
func (sws *serverWatchStream) toWatchResponse(wresp mvcc.WatchResponse) *pb.WatchResponse {
	sws.mu.Lock()
	needPrevKV := sws.prevKV[wresp.WatchID]
	sws.mu.Unlock()

	events := make([]*mvccpb.Event, len(wresp.Events))
	for i, ev := range wresp.Events {
		events[i] = ev
		if needPrevKV && !isCreateEvent(ev) {
			// The previous value is the key at the revision just before
			// this modification. It may be compacted away; etcd then sends
			// the event without PrevKv, and so do we.
			r, err := sws.s.KV().Range(sws.gRPCStream.Context(), ev.Kv.Key, nil,
				mvcc.RangeOptions{Rev: ev.Kv.ModRevision - 1})
			if err == nil && len(r.KVs) != 0 {
				// mvcc builds a separate Event per watcher, so setting
				// PrevKv in place cannot leak into another watcher.
				ev.PrevKv = r.KVs[0]
			}
		}
	}
	return &pb.WatchResponse{
		Header:          sws.newResponseHeader(wresp.Revision),
		WatchId:         int64(wresp.WatchID),
		Events:          events,
		CompactRevision: wresp.CompactRevision,
		// A compact revision means mvcc already cancelled this watcher.
		Canceled: wresp.CompactRevision != 0,
	}
}

func (sws *serverWatchStream) logSendErr(msg string, err error) {
	if isClientCtxErr(sws.gRPCStream.Context().Err(), err) {
		sws.lg.Debug(msg, zap.Error(err))
		return
	}
	sws.lg.Warn(msg, zap.Error(err))
}

// normalizeWatchRangeEnd turns the gRPC range_end convention into mvcc's:
// empty → nil (single key), "\x00" → non-nil empty (every key >= key),
// anything else → [key, end).
func normalizeWatchRangeEnd(end []byte) []byte {
	if len(end) == 0 {
		return nil
	}
	if len(end) == 1 && end[0] == 0 {
		return []byte{}
	}
	return end
}

func isCreateEvent(e *mvccpb.Event) bool {
	return e.Type == mvccpb.Event_PUT && e.Kv.CreateRevision == e.Kv.ModRevision
}

// filterNoPut and filterNoDelete return true for events to drop.
func filterNoPut(e *mvccpb.Event) bool    { return e.Type == mvccpb.Event_PUT }
func filterNoDelete(e *mvccpb.Event) bool { return e.Type == mvccpb.Event_DELETE }

// filtersFromRequest is etcd's v3rpc.FiltersFromRequest; unknown filter
// values are ignored, as etcd does.
func filtersFromRequest(creq *pb.WatchCreateRequest) []mvcc.FilterFunc {
	filters := make([]mvcc.FilterFunc, 0, len(creq.Filters))
	for _, ft := range creq.Filters {
		switch ft {
		case pb.WatchCreateRequest_NOPUT:
			filters = append(filters, filterNoPut)
		case pb.WatchCreateRequest_NODELETE:
			filters = append(filters, filterNoDelete)
		}
	}
	return filters
}

// sendFragments is etcd's: a response larger than maxRequestBytes with at
// least two events is split into several responses, all but the last with
// Fragment set; a single event is never split.
func sendFragments(wr *pb.WatchResponse, maxRequestBytes uint, send func(*pb.WatchResponse) error) error {
	if uint(proto.Size(wr)) < maxRequestBytes || len(wr.Events) < 2 {
		return send(wr)
	}
	idx := 0
	for {
		// A fresh message per fragment: gRPC may still hold the previous
		// one when send returns (grpc-go issue 5857).
		cur := &pb.WatchResponse{
			Header:          wr.Header,
			WatchId:         wr.WatchId,
			Created:         wr.Created,
			Canceled:        wr.Canceled,
			CompactRevision: wr.CompactRevision,
			CancelReason:    wr.CancelReason,
			Fragment:        true,
			Events:          make([]*mvccpb.Event, 0),
		}
		for _, ev := range wr.Events[idx:] {
			cur.Events = append(cur.Events, ev)
			if len(cur.Events) > 1 && uint(proto.Size(cur)) >= maxRequestBytes {
				cur.Events = cur.Events[:len(cur.Events)-1]
				break
			}
			idx++
		}
		if idx == len(wr.Events) {
			cur.Fragment = false
		}
		if err := send(cur); err != nil {
			return err
		}
		if !cur.Fragment {
			return nil
		}
	}
}

// isClientCtxErr reports whether err just means the client went away, which
// is logged at debug level (etcd's v3rpc.isClientCtxErr).
func isClientCtxErr(ctxErr error, err error) bool {
	if ctxErr != nil {
		return true
	}
	ev, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch ev.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		return true
	case codes.Unavailable:
		msg := ev.Message()
		if msg == "client disconnected" {
			return true
		}
		// grpc's CloseStream on a cancelled stream.
		if strings.HasPrefix(msg, "stream error: ") && strings.HasSuffix(msg, "; CANCEL") {
			return true
		}
	}
	return false
}
