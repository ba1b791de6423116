package grpcapi

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"go.uber.org/zap"
)

// Unit tests for the pure helpers of watch.go; the stream behaviour is
// tested end to end in watch_test.go.

func TestNormalizeWatchRangeEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte // nil vs empty matters to mvcc
	}{
		{"nil is single key", nil, nil},
		{"empty is single key", []byte{}, nil},
		{"zero byte is from-key", []byte{0}, []byte{}},
		{"range", []byte("b"), []byte("b")},
		{"two bytes starting with zero is a range", []byte{0, 0}, []byte{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := normalizeWatchRangeEnd(tc.in)
			if (got == nil) != (tc.want == nil) || !bytes.Equal(got, tc.want) {
				t.Fatalf("normalizeWatchRangeEnd(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
		})
	}
}

func TestFiltersFromRequest(t *testing.T) {
	put := &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{Key: []byte("k")}}
	del := &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k")}}
	for _, tc := range []struct {
		name             string
		filters          []pb.WatchCreateRequest_FilterType
		dropPut, dropDel bool
		n                int
	}{
		{"none", nil, false, false, 0},
		{"noput", []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}, true, false, 1},
		{"nodelete", []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}, false, true, 1},
		{"both", []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT, pb.WatchCreateRequest_NODELETE}, true, true, 2},
		{"unknown ignored", []pb.WatchCreateRequest_FilterType{42}, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := filtersFromRequest(&pb.WatchCreateRequest{Filters: tc.filters})
			if len(fs) != tc.n {
				t.Fatalf("got %d filters, want %d", len(fs), tc.n)
			}
			drops := func(ev *mvccpb.Event) bool {
				for _, f := range fs {
					if f(ev) {
						return true
					}
				}
				return false
			}
			if drops(put) != tc.dropPut || drops(del) != tc.dropDel {
				t.Fatalf("drops put=%v del=%v, want put=%v del=%v", drops(put), drops(del), tc.dropPut, tc.dropDel)
			}
		})
	}
}

func TestIsCreateEvent(t *testing.T) {
	if !isCreateEvent(&mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{CreateRevision: 5, ModRevision: 5}}) {
		t.Fatal("first put not a create event")
	}
	if isCreateEvent(&mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{CreateRevision: 5, ModRevision: 6}}) {
		t.Fatal("update reported as create")
	}
	if isCreateEvent(&mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{ModRevision: 6}}) {
		t.Fatal("delete reported as create")
	}
}

func newFragmentTestResponse(dataSize, events int) *pb.WatchResponse {
	wr := &pb.WatchResponse{Events: make([]*mvccpb.Event, events)}
	for i := range wr.Events {
		wr.Events[i] = &mvccpb.Event{Kv: &mvccpb.KeyValue{Key: bytes.Repeat([]byte("a"), dataSize)}}
	}
	return wr
}

func withIDAndHeader(wr *pb.WatchResponse) *pb.WatchResponse {
	wr.WatchId = 7
	for i, ev := range wr.Events {
		ev.Kv.ModRevision = int64(i + 1) // so that reordering is detected
	}
	wr.Header = &pb.ResponseHeader{Revision: 9, ClusterId: 1, MemberId: 2, RaftTerm: 3}
	return wr
}

// The table is etcd's TestSendFragment; in addition every fragment must keep
// the watch id and header, and the events must arrive complete and in order.
func TestSendFragments(t *testing.T) {
	for i, tc := range []struct {
		wr              *pb.WatchResponse
		maxRequestBytes uint
		fragments       int
	}{
		{newFragmentTestResponse(100, 1), math.MaxInt32, 1},
		{newFragmentTestResponse(10, 2), 50, 1},
		{newFragmentTestResponse(1024, 1), 1, 1},
		{newFragmentTestResponse(11, 5), 20, 5},
		{newFragmentTestResponse(15, 5), 10, 5},
		{newFragmentTestResponse(10, 4), 35, 2},
		{withIDAndHeader(newFragmentTestResponse(100, 10)), 300, 5},
	} {
		var got []*pb.WatchResponse
		err := sendFragments(tc.wr, tc.maxRequestBytes, func(wr *pb.WatchResponse) error {
			got = append(got, wr)
			return nil
		})
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if len(got) != tc.fragments {
			t.Fatalf("#%d: %d responses, want %d", i, len(got), tc.fragments)
		}
		var evs []*mvccpb.Event
		for j, r := range got {
			if last := j == len(got)-1; r.Fragment == last {
				t.Fatalf("#%d: response %d of %d has Fragment=%v", i, j, len(got), r.Fragment)
			}
			if r.WatchId != tc.wr.WatchId || r.Header != tc.wr.Header {
				t.Fatalf("#%d: fragment lost id/header: %v", i, r)
			}
			evs = append(evs, r.Events...)
		}
		if len(evs) != len(tc.wr.Events) {
			t.Fatalf("#%d: %d events reassembled, want %d", i, len(evs), len(tc.wr.Events))
		}
		for j := range evs {
			if evs[j] != tc.wr.Events[j] {
				t.Fatalf("#%d: event %d out of order", i, j)
			}
		}
		if !reflect.DeepEqual(evs, tc.wr.Events) {
			t.Fatalf("#%d: reassembled events differ", i)
		}
	}
}

func TestSendFragmentsStopsOnError(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	err := sendFragments(newFragmentTestResponse(15, 5), 10, func(*pb.WatchResponse) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err=%v calls=%d, want boom after 1 call", err, calls)
	}
}

// sendFragments copies WatchResponse field by field; a new proto field must
// be added there (etcd has the same guard).
func TestWatchResponseProtoFieldCount(t *testing.T) {
	const want = 8
	n := 0
	typ := reflect.TypeFor[pb.WatchResponse]()
	for i := range typ.NumField() {
		if typ.Field(i).Tag.Get("protobuf") != "" {
			n++
		}
	}
	if n != want {
		t.Fatalf("pb.WatchResponse has %d proto fields, sendFragments copies %d", n, want)
	}
}

func TestNewWatchConfig(t *testing.T) {
	lg := zap.NewNop()
	if c := newWatchConfig(lg, 1000, 0); c.progressInterval != DefaultWatchProgressNotifyInterval {
		t.Fatalf("default interval %v", c.progressInterval)
	}
	if c := newWatchConfig(lg, 1000, time.Millisecond); c.progressInterval != minWatchProgressInterval {
		t.Fatalf("interval not clamped: %v", c.progressInterval)
	}
	c := newWatchConfig(lg, 1000, time.Second)
	if c.maxRequestBytes != 1000+grpcOverheadBytes {
		t.Fatalf("maxRequestBytes %d", c.maxRequestBytes)
	}
	for range 100 {
		if d := c.jitteredInterval(); d < time.Second || d > 1100*time.Millisecond {
			t.Fatalf("jittered interval %v outside [1s, 1.1s]", d)
		}
	}
}

func TestWatchAuthCancelReason(t *testing.T) {
	lg := zap.NewNop()
	for _, tc := range []struct {
		err  error
		want error
	}{
		{auth.ErrInvalidAuthToken, rpctypes.ErrGRPCInvalidAuthToken},
		{auth.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
		{auth.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
		{auth.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
		{errors.New("other"), rpctypes.ErrGRPCPermissionDenied},
	} {
		if got := watchAuthCancelReason(lg, tc.err); got != tc.want.Error() {
			t.Errorf("%v: got %q, want %q", tc.err, got, tc.want.Error())
		}
	}
}
