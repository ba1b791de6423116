package grpcapi

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"google.golang.org/grpc/metadata"
)

// End-to-end tests of the Watch service through a real gRPC listener, with
// clientv3 (what users run) and, for wire details clientv3 hides, the raw
// pb.WatchClient.

// nextResp waits for one watch response or fails the test.
func nextResp(t testing.TB, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case wr, ok := <-wch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return wr
	case <-time.After(wllTimeout):
		t.Fatal("timed out waiting for a watch response")
	}
	return clientv3.WatchResponse{}
}

// collectEvents reads responses until n events arrived.
func collectEvents(t testing.TB, wch clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	for len(evs) < n {
		wr := nextResp(t, wch)
		if err := wr.Err(); err != nil {
			t.Fatalf("watch error after %d events: %v", len(evs), err)
		}
		evs = append(evs, wr.Events...)
	}
	if len(evs) != n {
		t.Fatalf("got %d events, want %d", len(evs), n)
	}
	return evs
}

// expectNoEvent asserts that nothing arrives for a short while. Used only to
// check that filtered-out events are not delivered; a later positive event
// on the same watch proves ordering, so the wait can stay short.
func expectNoEvent(t testing.TB, wch clientv3.WatchChan, d time.Duration) {
	t.Helper()
	select {
	case wr := <-wch:
		t.Fatalf("unexpected watch response: %+v", wr)
	case <-time.After(d):
	}
}

func evString(ev *clientv3.Event) string {
	return fmt.Sprintf("%s %s=%s@%d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
}

func TestWatchKeyRangePrefixFromKey(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	single := watchCreated(t, e.client, ctx, "foo")
	prefix := watchCreated(t, e.client, ctx, "foo", clientv3.WithPrefix())
	rng := watchCreated(t, e.client, ctx, "b", clientv3.WithRange("d"))
	fromKey := watchCreated(t, e.client, ctx, "c", clientv3.WithFromKey())
	all := watchCreated(t, e.client, ctx, "", clientv3.WithFromKey()) // empty key: everything

	e.put("a", "1")
	e.put("foo", "2")
	e.put("foobar", "3")
	e.put("c", "4")
	e.put("d", "5")
	e.put("fo", "6")

	for _, tc := range []struct {
		name string
		wch  clientv3.WatchChan
		want []string
	}{
		{"single", single, []string{"PUT foo=2@3"}},
		{"prefix", prefix, []string{"PUT foo=2@3", "PUT foobar=3@4"}},
		{"range", rng, []string{"PUT c=4@5"}},
		{"fromkey", fromKey, []string{"PUT foo=2@3", "PUT foobar=3@4", "PUT c=4@5", "PUT d=5@6", "PUT fo=6@7"}},
		{"all", all, []string{"PUT a=1@2", "PUT foo=2@3", "PUT foobar=3@4", "PUT c=4@5", "PUT d=5@6", "PUT fo=6@7"}},
	} {
		evs := collectEvents(t, tc.wch, len(tc.want))
		for i, ev := range evs {
			if got := evString(ev); got != tc.want[i] {
				t.Errorf("%s: event %d = %s, want %s", tc.name, i, got, tc.want[i])
			}
		}
	}
}

// watchCreated starts a clientv3 watch and waits for the server's created
// reply, so that no write in the test can race ahead of the watcher.
func watchCreated(t testing.TB, c *clientv3.Client, ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	t.Helper()
	wch := c.Watch(ctx, key, append(opts, clientv3.WithCreatedNotify())...)
	if wr := nextResp(t, wch); !wr.Created || wr.Canceled {
		t.Fatalf("watch %q: want created reply, got %+v (err %v)", key, wr, wr.Err())
	}
	return wch
}

func TestWatchReplayFromOldRevision(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	r1 := e.put("k", "v1")
	e.put("k", "v2")
	e.del("k")
	e.put("other", "x")
	e.put("k", "v3")

	wch := e.client.Watch(e.ctx(), "k", clientv3.WithRev(r1))
	evs := collectEvents(t, wch, 4)
	want := []string{"PUT k=v1@2", "PUT k=v2@3", "DELETE k=@4", "PUT k=v3@6"}
	for i, ev := range evs {
		if got := evString(ev); got != want[i] {
			t.Errorf("event %d = %s, want %s", i, got, want[i])
		}
	}
	// History then live: the next write arrives on the same watch.
	e.put("k", "v4")
	if ev := collectEvents(t, wch, 1)[0]; evString(ev) != "PUT k=v4@7" {
		t.Fatalf("live event after replay = %s", evString(ev))
	}
}

func TestWatchCompactedRevision(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	for i := range 5 {
		e.put("k", fmt.Sprint(i))
	}
	e.compact(4)

	wr := nextResp(t, e.client.Watch(e.ctx(), "k", clientv3.WithRev(2)))
	if !wr.Canceled || wr.CompactRevision != 4 {
		t.Fatalf("want canceled with compact revision 4, got %+v", wr)
	}
	if wr.Err() != rpctypes.ErrCompacted {
		t.Fatalf("Err() = %v, want %v", wr.Err(), rpctypes.ErrCompacted)
	}

	// Watching from exactly the compact revision is still possible.
	evs := collectEvents(t, e.client.Watch(e.ctx(), "k", clientv3.WithRev(4)), 3)
	if evs[0].Kv.ModRevision != 4 {
		t.Fatalf("first event at %d, want 4", evs[0].Kv.ModRevision)
	}
}

func TestWatchFutureRevision(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	cur := e.put("k", "0")
	wch := watchCreated(t, e.client, e.ctx(), "k", clientv3.WithRev(cur+3))
	for i := 1; i <= 4; i++ {
		e.put("k", fmt.Sprint(i))
	}
	evs := collectEvents(t, wch, 2)
	if evs[0].Kv.ModRevision != cur+3 || evs[1].Kv.ModRevision != cur+4 {
		t.Fatalf("events %s, %s; want revisions %d and %d", evString(evs[0]), evString(evs[1]), cur+3, cur+4)
	}
}

func TestWatchPrevKV(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	with := watchCreated(t, e.client, ctx, "k", clientv3.WithPrevKV())
	without := watchCreated(t, e.client, ctx, "k")
	e.put("k", "v1")
	e.put("k", "v2")
	e.del("k")

	evs := collectEvents(t, with, 3)
	if evs[0].PrevKv != nil {
		t.Errorf("create event has PrevKv %v", evs[0].PrevKv)
	}
	if evs[1].PrevKv == nil || string(evs[1].PrevKv.Value) != "v1" {
		t.Errorf("update PrevKv = %v, want v1", evs[1].PrevKv)
	}
	if evs[2].PrevKv == nil || string(evs[2].PrevKv.Value) != "v2" {
		t.Errorf("delete PrevKv = %v, want v2", evs[2].PrevKv)
	}
	// A watcher that did not ask must not see PrevKv (events are shared
	// inside mvcc between watchers).
	for i, ev := range collectEvents(t, without, 3) {
		if ev.PrevKv != nil {
			t.Errorf("watch without prev_kv: event %d has PrevKv", i)
		}
	}
}

func TestWatchFilters(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	noPut := watchCreated(t, e.client, ctx, "k", clientv3.WithFilterPut())
	noDel := watchCreated(t, e.client, ctx, "k", clientv3.WithFilterDelete())
	e.put("k", "1")
	e.del("k")
	e.put("k", "2")

	if evs := collectEvents(t, noPut, 1); evs[0].Type != mvccpb.DELETE {
		t.Fatalf("NOPUT watch got %s", evString(evs[0]))
	}
	evs := collectEvents(t, noDel, 2)
	if evs[0].Type != mvccpb.PUT || evs[1].Type != mvccpb.PUT || string(evs[1].Kv.Value) != "2" {
		t.Fatalf("NODELETE watch got %s, %s", evString(evs[0]), evString(evs[1]))
	}
	expectNoEvent(t, noPut, 200*time.Millisecond)
}

func TestWatchProgressNotify(t *testing.T) {
	e := newTestEnv(t, envOptions{progressInterval: 100 * time.Millisecond})
	rev := e.put("k", "v")
	wch := e.client.Watch(e.ctx(), "k", clientv3.WithProgressNotify())
	for range 2 {
		wr := nextResp(t, wch)
		if !wr.IsProgressNotify() {
			t.Fatalf("want a progress notification, got %+v", wr)
		}
		if wr.Header.Revision != rev {
			t.Fatalf("progress revision %d, want %d", wr.Header.Revision, rev)
		}
	}
	// After a write the notification reports the new revision.
	rev = e.put("other", "v")
	for {
		wr := nextResp(t, wch)
		if wr.IsProgressNotify() && wr.Header.Revision == rev {
			break
		}
		if wr.Header.Revision > rev || len(wr.Events) > 0 {
			t.Fatalf("unexpected response %+v", wr)
		}
	}
}

func TestWatchRequestProgress(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	wch := watchCreated(t, e.client, ctx, "k")
	rev := e.put("other", "x")
	if err := e.client.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	wr := nextResp(t, wch)
	if !wr.IsProgressNotify() || wr.Header.Revision != rev {
		t.Fatalf("want progress at %d, got %+v", rev, wr)
	}
}

func TestWatchFragment(t *testing.T) {
	// The fragment threshold is --max-request-bytes + grpcOverheadBytes
	// (2 MiB by default): replaying 25 x 100 KiB needs more.
	const n = 25
	e := newTestEnv(t, envOptions{})
	val := strings.Repeat("x", 100*1024)
	first := e.put("big00", val)
	for i := 1; i < n; i++ {
		e.put(fmt.Sprintf("big%02d", i), val)
	}

	// clientv3 reassembles fragments into one response.
	wr := nextResp(t, e.client.Watch(e.ctx(), "big", clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithFragment()))
	if len(wr.Events) != n {
		t.Fatalf("reassembled response has %d events, want %d", len(wr.Events), n)
	}

	// On the wire: several Fragment=true responses, then one without.
	ws, err := pb.NewWatchClient(e.client.ActiveConnection()).Watch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("big"), RangeEnd: []byte("bih"), StartRevision: first, Fragment: true,
	}}}); err != nil {
		t.Fatal(err)
	}
	if r := recvRaw(t, ws); !r.Created {
		t.Fatalf("want created, got %+v", r)
	}
	var got, frags int
	for got < n {
		r := recvRaw(t, ws)
		got += len(r.Events)
		if r.Fragment {
			frags++
		} else if got != n {
			t.Fatalf("unfragmented response after %d of %d events", got, n)
		}
	}
	if frags == 0 {
		t.Fatal("no fragments on the wire")
	}

	// Without the option the server sends one big response.
	wr = nextResp(t, e.client.Watch(e.ctx(), "big", clientv3.WithPrefix(), clientv3.WithRev(first)))
	if len(wr.Events) != n {
		t.Fatalf("unfragmented response has %d events, want %d", len(wr.Events), n)
	}
}

func recvRaw(t testing.TB, ws pb.Watch_WatchClient) *pb.WatchResponse {
	t.Helper()
	type result struct {
		r   *pb.WatchResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := ws.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("Recv: %v", res.err)
		}
		return res.r
	case <-time.After(wllTimeout):
		t.Fatal("timed out in Recv")
	}
	return nil
}

func sendRaw(t testing.TB, ws pb.Watch_WatchClient, req *pb.WatchRequest) {
	t.Helper()
	if err := ws.Send(req); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func createReq(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func progressReq() *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
}

// TestWatchWireProtocol checks the replies clientv3 does not expose:
// client-chosen ids, duplicate ids, negative start revision, empty range,
// cancel of known and unknown ids, and headers.
func TestWatchWireProtocol(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	rev := e.put("a", "1")
	ws, err := pb.NewWatchClient(e.client.ActiveConnection()).Watch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}

	// Client-chosen id.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 42}))
	r := recvRaw(t, ws)
	if !r.Created || r.Canceled || r.WatchId != 42 {
		t.Fatalf("create id 42: %+v", r)
	}
	if h := r.Header; h.Revision != rev || h.ClusterId != uint64(e.s.ClusterID()) || h.MemberId != uint64(e.s.MemberID()) || h.RaftTerm != e.s.Term() {
		t.Fatalf("created header %+v", h)
	}

	// Duplicate id: created+canceled, id -1, mvcc's error text.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("b"), WatchId: 42}))
	r = recvRaw(t, ws)
	if !r.Created || !r.Canceled || r.WatchId != clientv3.InvalidWatchID || r.CancelReason != mvcc.ErrWatcherDuplicateID.Error() {
		t.Fatalf("duplicate id: %+v", r)
	}

	// Negative start revision: etcd answers with the compacted error text.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1}))
	r = recvRaw(t, ws)
	if !r.Created || !r.Canceled || r.WatchId != clientv3.InvalidWatchID || r.CancelReason != rpctypes.ErrCompacted.Error() {
		t.Fatalf("negative start revision: %+v", r)
	}

	// key >= range_end: mvcc's empty range error.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("z"), RangeEnd: []byte("a")}))
	r = recvRaw(t, ws)
	if !r.Created || !r.Canceled || r.WatchId != clientv3.InvalidWatchID || r.CancelReason != mvcc.ErrEmptyWatcherRange.Error() {
		t.Fatalf("empty range: %+v", r)
	}

	// Auto-assigned ids skip the ones in use.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("a")}))
	r = recvRaw(t, ws)
	if !r.Created || r.Canceled || r.WatchId != 0 {
		t.Fatalf("auto id: %+v", r)
	}

	// Unknown id: no reply at all (etcd ignores it). The progress reply that
	// follows proves nothing was sent in between.
	sendRaw(t, ws, cancelReq(999))
	sendRaw(t, ws, progressReq())
	r = recvRaw(t, ws)
	if r.WatchId != clientv3.InvalidWatchID || r.Canceled || r.Created || len(r.Events) != 0 || r.Header.Revision != rev {
		t.Fatalf("want stream progress reply, got %+v", r)
	}

	// Known id: canceled reply, and no more events for it.
	sendRaw(t, ws, cancelReq(42))
	r = recvRaw(t, ws)
	if !r.Canceled || r.Created || r.WatchId != 42 {
		t.Fatalf("cancel 42: %+v", r)
	}
	rev = e.put("a", "2")
	r = recvRaw(t, ws)
	if r.WatchId != 0 || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("want event for watch 0 only, got %+v", r)
	}

	// The id can be reused after cancel.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 42}))
	if r = recvRaw(t, ws); !r.Created || r.Canceled || r.WatchId != 42 {
		t.Fatalf("re-create id 42: %+v", r)
	}

	// Client closes its side: the server ends the stream cleanly.
	if err := ws.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := ws.Recv(); err != nil {
			break
		}
	}
}

// TestWatchManyWatchersOneStream: 1,000 watchers on one stream each receive
// every event, in order.
func TestWatchManyWatchersOneStream(t *testing.T) {
	const watchers, writes = 1000, 30
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	chans := make([]clientv3.WatchChan, watchers)
	for i := range chans {
		chans[i] = watchCreated(t, e.client, ctx, "k", clientv3.WithPrefix())
	}
	revs := make([]int64, writes)
	for i := range revs {
		revs[i] = e.put(fmt.Sprintf("k%02d", i), "v")
	}

	var wg sync.WaitGroup
	errs := make(chan error, watchers)
	for i, wch := range chans {
		wg.Go(func() {
			var got []int64
			for len(got) < writes {
				select {
				case wr, ok := <-wch:
					if !ok || wr.Err() != nil {
						errs <- fmt.Errorf("watcher %d: closed or failed after %d events: %v", i, len(got), wr.Err())
						return
					}
					for _, ev := range wr.Events {
						got = append(got, ev.Kv.ModRevision)
					}
				case <-time.After(wllTimeout):
					errs <- fmt.Errorf("watcher %d: timed out after %d events", i, len(got))
					return
				}
			}
			for j := range got {
				if j >= writes || got[j] != revs[j] {
					errs <- fmt.Errorf("watcher %d: events %v, want %v", i, got, revs)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestWatchCancelByContext: cancelling one watcher's context closes its
// channel and leaves the stream's other watchers working.
func TestWatchCancelByContext(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	cctx, cancel := context.WithCancel(ctx)
	gone := watchCreated(t, e.client, cctx, "k")
	stays := watchCreated(t, e.client, ctx, "k")
	cancel()
	select {
	case _, ok := <-gone:
		for ok {
			_, ok = <-gone
		}
	case <-time.After(wllTimeout):
		t.Fatal("cancelled watch channel not closed")
	}
	e.put("k", "v")
	if evs := collectEvents(t, stays, 1); string(evs[0].Kv.Value) != "v" {
		t.Fatalf("got %s", evString(evs[0]))
	}
}

// TestWatchSlowConsumerDoesNotBlock: a stream whose client stops reading
// must not slow writers or other watchers.
func TestWatchSlowConsumerDoesNotBlock(t *testing.T) {
	const writes = 200
	e := newTestEnv(t, envOptions{})
	// A raw stream that is never read after creation.
	stuck, err := pb.NewWatchClient(e.client.ActiveConnection()).Watch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, stuck, createReq(&pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l")}))
	if r := recvRaw(t, stuck); !r.Created {
		t.Fatalf("%+v", r)
	}
	// Another client (own connection, own flow control) reads everything.
	other := newExtraClient(t, e)
	wch := watchCreated(t, other, e.ctx(), "k", clientv3.WithPrefix())

	val := strings.Repeat("v", 64*1024) // 200 x 64 KiB overflows gRPC windows
	start := time.Now()
	for i := range writes {
		e.put(fmt.Sprintf("k%03d", i), val)
	}
	if d := time.Since(start); d > wllTimeout/2 {
		t.Fatalf("writes took %v with a stuck watcher", d)
	}
	if evs := collectEvents(t, wch, writes); len(evs) != writes {
		t.Fatalf("got %d events", len(evs))
	}
}

func newExtraClient(t testing.TB, e *testEnv) *clientv3.Client {
	t.Helper()
	return newWLLClient(t, e.addr, zap.NewNop())
}

// TestWatchAuthPermission: with auth enabled a watch needs read permission
// on its whole range; otherwise the create is answered created+canceled
// with etcd's error, and the stream stays usable.
func TestWatchAuthPermission(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	for _, step := range []func() error{
		func() error { _, err := e.client.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := e.client.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := e.client.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := e.client.RoleGrantPermission(ctx, "reader", "a", "c", clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := e.client.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := e.client.UserGrantRole(ctx, "alice", "reader"); return err },
		func() error { _, err := e.client.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("auth setup: %v", err)
		}
	}

	alice, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.addr}, DialTimeout: wllTimeout,
		Username: "alice", Password: "alicepw", Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })

	// etcd puts the gRPC error's full text ("rpc error: code = ...") in
	// CancelReason, and clientv3 hands that text back from Err(); match it.
	denied := func(wch clientv3.WatchChan, what string) {
		t.Helper()
		wr := nextResp(t, wch)
		if !wr.Canceled || wr.Err() == nil || wr.Err().Error() != rpctypes.ErrGRPCPermissionDenied.Error() {
			t.Fatalf("%s: want canceled with permission denied, got %+v (err %v)", what, wr, wr.Err())
		}
	}
	denied(alice.Watch(ctx, "z"), "key outside the role")
	denied(alice.Watch(ctx, "b", clientv3.WithRange("d")), "range sticking out of the role")
	denied(alice.Watch(ctx, "", clientv3.WithFromKey()), "whole keyspace")

	ok := watchCreated(t, alice, ctx, "a", clientv3.WithRange("c"))
	root, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.addr}, DialTimeout: wllTimeout,
		Username: "root", Password: "rootpw", Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	if _, err := root.Put(ctx, "b", "v"); err != nil {
		t.Fatal(err)
	}
	if evs := collectEvents(t, ok, 1); string(evs[0].Kv.Key) != "b" {
		t.Fatalf("got %s", evString(evs[0]))
	}

	// No token at all: etcd says the user name is empty.
	anon := newWLLClient(t, e.addr, zap.NewNop())
	wr := nextResp(t, anon.Watch(ctx, "a"))
	if !wr.Canceled || wr.Err() == nil || wr.Err().Error() != rpctypes.ErrGRPCUserEmpty.Error() {
		t.Fatalf("anonymous watch: %+v (err %v)", wr, wr.Err())
	}
}

// TestStreamsDoNotLeakGoroutines: watch and keepalive streams leave no
// goroutine behind once their client goes away (server side: the handler,
// the send loop and the receive loop all end).
func TestStreamsDoNotLeakGoroutines(t *testing.T) {
	const streams = 40
	e := newTestEnv(t, envOptions{})
	ctx := e.ctx()
	g, err := e.client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	open := func() {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.addr}, DialTimeout: wllTimeout, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wc := pb.NewWatchClient(c.ActiveConnection())
		lc := pb.NewLeaseClient(c.ActiveConnection())
		for i := range streams {
			ws, err := wc.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte(fmt.Sprint("leak", i)), PrevKv: true}))
			if r := recvRaw(t, ws); !r.Created {
				t.Fatalf("%+v", r)
			}
			ks, err := lc.LeaseKeepAlive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := ks.Send(&pb.LeaseKeepAliveRequest{ID: int64(g.ID)}); err != nil {
				t.Fatal(err)
			}
			if _, err := ks.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	open() // warm up connection pools and lazily started goroutines
	waitGoroutinesSettle()
	base := runtime.NumGoroutine()
	open()
	deadline := time.Now().Add(wllTimeout)
	for {
		n := runtime.NumGoroutine()
		if n <= base+5 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before %d streams were opened and closed:\n%s",
				n, base, 2*streams, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGoroutinesSettle waits until the goroutine count stops falling.
func waitGoroutinesSettle() {
	prev := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n >= prev {
			return
		}
		prev = n
	}
}

// startWatchers opens streams x perStream watchers on key (each stream is a
// separate gRPC stream: clientv3 keys streams by outgoing metadata) and
// returns a channel that receives one value per delivered event.
func startWatchers(b *testing.B, e *testEnv, key string, streams, perStream int) <-chan struct{} {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan struct{}, streams*perStream)
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	var created sync.WaitGroup
	for s := range streams {
		sctx := metadata.AppendToOutgoingContext(ctx, "bench-stream", fmt.Sprint(s))
		created.Go(func() {
			for range perStream {
				wch := e.client.Watch(sctx, key, clientv3.WithCreatedNotify())
				if wr := <-wch; !wr.Created {
					b.Errorf("watch not created: %v", wr.Err())
					return
				}
				wg.Go(func() {
					for wr := range wch {
						for range wr.Events {
							select {
							case got <- struct{}{}:
							case <-ctx.Done():
								return
							}
						}
					}
				})
			}
		})
	}
	created.Wait()
	return got
}

func benchmarkWatchFanout(b *testing.B, streams, perStream int) {
	e := newTestEnv(b, envOptions{})
	got := startWatchers(b, e, "bench", streams, perStream)
	n := streams * perStream
	ctx := e.ctx()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.client.Put(ctx, "bench", "v"); err != nil {
			b.Fatal(err)
		}
		for range n {
			<-got
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkWatchLatency100: one op = a Put and its event reaching all 100
// watchers (10 streams x 10); ns/op is put-to-last-delivery latency.
func BenchmarkWatchLatency100(b *testing.B) { benchmarkWatchFanout(b, 10, 10) }

// BenchmarkWatchFanout10000: one Put delivered to 10,000 watchers (100
// streams x 100).
func BenchmarkWatchFanout10000(b *testing.B) { benchmarkWatchFanout(b, 100, 100) }

// TestWatchOddRequests: malformed or unusual requests never break the
// stream (etcd ignores what it cannot use).
func TestWatchOddRequests(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ws, err := pb.NewWatchClient(e.client.ActiveConnection()).Watch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	// On the wire an empty oneof member arrives as an empty message: an
	// empty create watches key "\x00" (id 0), an empty cancel cancels id 0,
	// an empty progress request asks for progress.
	for _, req := range []*pb.WatchRequest{
		{}, // no request at all: ignored
		{RequestUnion: &pb.WatchRequest_CreateRequest{}},
		// (progress before cancel: a stream without watchers gets no
		// progress reply, in etcd too)
		{RequestUnion: &pb.WatchRequest_ProgressRequest{}},
		{RequestUnion: &pb.WatchRequest_CancelRequest{}},
	} {
		sendRaw(t, ws, req)
	}
	// The progress reply travels through mvcc, the created/canceled replies
	// through the control queue: like etcd, their relative order is not
	// fixed, except that canceled follows created.
	var created, progressed, canceled bool
	for range 3 {
		switch r := recvRaw(t, ws); {
		case r.Created && !r.Canceled && r.WatchId == 0 && !canceled:
			created = true
		case !r.Created && !r.Canceled && r.WatchId == clientv3.InvalidWatchID:
			progressed = true
		case !r.Created && r.Canceled && r.WatchId == 0 && created:
			canceled = true
		default:
			t.Fatalf("unexpected reply %+v (created=%v progress=%v canceled=%v)", r, created, progressed, canceled)
		}
	}
	if !created || !progressed || !canceled {
		t.Fatalf("created=%v progress=%v canceled=%v", created, progressed, canceled)
	}
	// A far-future start revision and unknown filter values are accepted.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 1 << 62, Filters: []pb.WatchCreateRequest_FilterType{7}}))
	if r := recvRaw(t, ws); !r.Created || r.Canceled || r.WatchId != 1 {
		t.Fatalf("future watch: %+v", r)
	}
	// Empty key with range_end "\x00" watches everything.
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{RangeEnd: []byte{0}, WatchId: 9}))
	if r := recvRaw(t, ws); !r.Created || r.Canceled || r.WatchId != 9 {
		t.Fatalf("all-keys watch: %+v", r)
	}
	rev := e.put("anything", "v")
	r := recvRaw(t, ws)
	if r.WatchId != 9 || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("want the put on watch 9, got %+v", r)
	}
}

// A client that half-closes its send side after creating a watch (what
// `curl /v3/watch` through the gateway does) keeps receiving events, as on
// etcd: only a receive error or the stream's context ends a watch stream.
func TestWatchSurvivesClientHalfClose(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ws, err := pb.NewWatchClient(e.client.ActiveConnection()).Watch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, ws, createReq(&pb.WatchCreateRequest{Key: []byte("hc")}))
	if r := recvRaw(t, ws); !r.Created || r.Canceled {
		t.Fatalf("create: %+v", r)
	}
	if err := ws.CloseSend(); err != nil {
		t.Fatal(err)
	}
	rev := e.put("hc", "after-close-send")
	r := recvRaw(t, ws)
	if len(r.Events) != 1 || string(r.Events[0].Kv.Value) != "after-close-send" || r.Events[0].Kv.ModRevision != rev {
		t.Fatalf("event after CloseSend: %+v", r)
	}
}
