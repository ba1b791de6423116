package grpcapi

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func put(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
}

func del(k, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
}

func get(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k)}}}
}

func txnOp(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func ops(n int, mk func(i int) *pb.RequestOp) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = mk(i)
	}
	return out
}

func keyN(i int) string { return "k" + strings.Repeat("x", i) }

func cmp(k string) *pb.Compare {
	return &pb.Compare{Key: []byte(k), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL}
}

// sameError reports whether got is exactly want: same gRPC code and message.
func sameError(got, want error) bool {
	if got == nil || want == nil {
		return got == want
	}
	gs, ok1 := status.FromError(got)
	ws, ok2 := status.FromError(want)
	return ok1 && ok2 && gs.Code() == ws.Code() && gs.Message() == ws.Message()
}

func TestCheckRangeRequest(t *testing.T) {
	tests := []struct {
		name string
		r    *pb.RangeRequest
		want error
	}{
		{"ok", &pb.RangeRequest{Key: []byte("a")}, nil},
		{"ok sort", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE}, nil},
		{"empty key", &pb.RangeRequest{}, rpctypes.ErrGRPCEmptyKey},
		{"nil", nil, rpctypes.ErrGRPCEmptyKey},
		{"bad sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: 200}, rpctypes.ErrGRPCInvalidSortOption},
		{"bad sort target", &pb.RangeRequest{Key: []byte("a"), SortTarget: 100}, rpctypes.ErrGRPCInvalidSortOption},
		{"negative sort order", &pb.RangeRequest{Key: []byte("a"), SortOrder: -1}, rpctypes.ErrGRPCInvalidSortOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkRangeRequest(tt.r); !sameError(got, tt.want) {
				t.Fatalf("checkRangeRequest = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckRangeStreamRequest(t *testing.T) {
	tests := []struct {
		name     string
		r        *pb.RangeRequest
		wantCode codes.Code
	}{
		{"ok", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b")}, codes.OK},
		{"ok key ascend", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_KEY}, codes.OK},
		{"empty key", &pb.RangeRequest{}, codes.InvalidArgument},
		{"custom sort", &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND}, codes.Unimplemented},
		{"revision filter", &pb.RangeRequest{Key: []byte("a"), MinModRevision: 3}, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(checkRangeStreamRequest(tt.r)); got != tt.wantCode {
				t.Fatalf("code = %v, want %v", got, tt.wantCode)
			}
		})
	}
}

func TestCheckPutRequest(t *testing.T) {
	tests := []struct {
		name string
		r    *pb.PutRequest
		want error
	}{
		{"ok", &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 5}, nil},
		{"ignore value without value", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}, nil},
		{"ignore lease without lease", &pb.PutRequest{Key: []byte("a"), IgnoreLease: true}, nil},
		{"empty key", &pb.PutRequest{Value: []byte("v")}, rpctypes.ErrGRPCEmptyKey},
		{"nil", nil, rpctypes.ErrGRPCEmptyKey},
		{"ignore value with value", &pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Value: []byte("v")}, rpctypes.ErrGRPCValueProvided},
		{"ignore lease with lease", &pb.PutRequest{Key: []byte("a"), IgnoreLease: true, Lease: 1}, rpctypes.ErrGRPCLeaseProvided},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkPutRequest(tt.r); !sameError(got, tt.want) {
				t.Fatalf("checkPutRequest = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckDeleteRequest(t *testing.T) {
	if err := checkDeleteRequest(&pb.DeleteRangeRequest{Key: []byte("a")}); err != nil {
		t.Fatalf("ok delete: %v", err)
	}
	for _, r := range []*pb.DeleteRangeRequest{{}, {RangeEnd: []byte("z")}, nil} {
		if got := checkDeleteRequest(r); !sameError(got, rpctypes.ErrGRPCEmptyKey) {
			t.Fatalf("checkDeleteRequest(%v) = %v, want empty key", r, got)
		}
	}
}

func TestCheckTxnRequest(t *testing.T) {
	const maxOps = 4
	tests := []struct {
		name string
		r    *pb.TxnRequest
		want error
	}{
		{"empty txn", &pb.TxnRequest{}, nil},
		{"at limit", &pb.TxnRequest{
			Compare: []*pb.Compare{cmp("a"), cmp("b"), cmp("c"), cmp("d")},
			Success: ops(maxOps, func(i int) *pb.RequestOp { return put(keyN(i)) }),
			Failure: ops(maxOps, func(i int) *pb.RequestOp { return get(keyN(i)) }),
		}, nil},
		{"too many compares", &pb.TxnRequest{Compare: []*pb.Compare{cmp("a"), cmp("b"), cmp("c"), cmp("d"), cmp("e")}}, rpctypes.ErrGRPCTooManyOps},
		{"too many success", &pb.TxnRequest{Success: ops(maxOps+1, func(i int) *pb.RequestOp { return put(keyN(i)) })}, rpctypes.ErrGRPCTooManyOps},
		{"too many failure", &pb.TxnRequest{Failure: ops(maxOps+1, func(i int) *pb.RequestOp { return get(keyN(i)) })}, rpctypes.ErrGRPCTooManyOps},
		{"nested gets parent's leftover budget", &pb.TxnRequest{
			// 2 ops at the top leave 2 for the nested txn, which has 3.
			Success: []*pb.RequestOp{put("a"), txnOp(&pb.TxnRequest{Success: ops(3, func(i int) *pb.RequestOp { return put(keyN(i + 1)) })})},
		}, rpctypes.ErrGRPCTooManyOps},
		{"nested within budget", &pb.TxnRequest{
			Success: []*pb.RequestOp{put("a"), txnOp(&pb.TxnRequest{Success: ops(2, func(i int) *pb.RequestOp { return put(keyN(i + 1)) })})},
		}, nil},
		{"compare empty key", &pb.TxnRequest{Compare: []*pb.Compare{cmp("")}}, rpctypes.ErrGRPCEmptyKey},
		{"put empty key", &pb.TxnRequest{Success: []*pb.RequestOp{put("")}}, rpctypes.ErrGRPCEmptyKey},
		{"delete empty key in failure", &pb.TxnRequest{Failure: []*pb.RequestOp{del("", "")}}, rpctypes.ErrGRPCEmptyKey},
		{"range bad sort", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), SortOrder: 9}}}}}, rpctypes.ErrGRPCInvalidSortOption},
		{"put ignore value with value", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}}}}}, rpctypes.ErrGRPCValueProvided},
		{"nested invalid", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{put("")}})}}, rpctypes.ErrGRPCEmptyKey},
		{"empty op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}, rpctypes.ErrGRPCKeyNotFound},
		{"nil op", &pb.TxnRequest{Success: []*pb.RequestOp{nil}}, rpctypes.ErrGRPCKeyNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkTxnRequest(tt.r, maxOps); !sameError(got, tt.want) {
				t.Fatalf("checkTxnRequest = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckTxnIntervals(t *testing.T) {
	tests := []struct {
		name string
		r    *pb.TxnRequest
		want error
	}{
		{"distinct puts", &pb.TxnRequest{Success: []*pb.RequestOp{put("a"), put("b")}}, nil},
		{"duplicate puts", &pb.TxnRequest{Success: []*pb.RequestOp{put("a"), put("a")}}, rpctypes.ErrGRPCDuplicateKey},
		{"duplicate puts in failure", &pb.TxnRequest{Failure: []*pb.RequestOp{put("a"), put("a")}}, rpctypes.ErrGRPCDuplicateKey},
		{"same key in success and failure", &pb.TxnRequest{Success: []*pb.RequestOp{put("a")}, Failure: []*pb.RequestOp{put("a")}}, nil},
		{"put inside deleted range", &pb.TxnRequest{Success: []*pb.RequestOp{del("a", "c"), put("b")}}, rpctypes.ErrGRPCDuplicateKey},
		{"put at deleted point", &pb.TxnRequest{Success: []*pb.RequestOp{del("a", ""), put("a")}}, rpctypes.ErrGRPCDuplicateKey},
		{"put at end of deleted range (exclusive)", &pb.TxnRequest{Success: []*pb.RequestOp{del("a", "c"), put("c")}}, nil},
		{"overlapping deletes are fine", &pb.TxnRequest{Success: []*pb.RequestOp{del("a", "c"), del("b", "d")}}, nil},
		{"gets do not conflict", &pb.TxnRequest{Success: []*pb.RequestOp{get("a"), put("a"), get("a")}}, nil},
		{"nested put vs outer put", &pb.TxnRequest{Success: []*pb.RequestOp{put("a"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("a")}})}}, rpctypes.ErrGRPCDuplicateKey},
		{"nested put vs outer delete", &pb.TxnRequest{Success: []*pb.RequestOp{del("a", "z"), txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{put("m")}})}}, rpctypes.ErrGRPCDuplicateKey},
		{"nested delete vs outer put", &pb.TxnRequest{Success: []*pb.RequestOp{put("m"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{del("a", "z")}})}}, rpctypes.ErrGRPCDuplicateKey},
		{"nested then/else same key", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("a")}, Failure: []*pb.RequestOp{put("a")}})}}, nil},
		{"two nested txns same key", &pb.TxnRequest{Success: []*pb.RequestOp{
			txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("a")}}),
			txnOp(&pb.TxnRequest{Failure: []*pb.RequestOp{put("a")}}),
		}}, rpctypes.ErrGRPCDuplicateKey},
		{"deep nesting", &pb.TxnRequest{Success: []*pb.RequestOp{
			put("x"),
			txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("x")}})}}),
		}}, rpctypes.ErrGRPCDuplicateKey},
		{"nil nested txn ignored", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(nil), put("a")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkTxnIntervals(tt.r); !sameError(got, tt.want) {
				t.Fatalf("checkTxnIntervals = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCheckBranchIntervalsFastPath: the put/range-only shortcut must
// accept and reject exactly what the full interval check does.
func TestCheckBranchIntervalsFastPath(t *testing.T) {
	branches := [][]*pb.RequestOp{
		nil,
		{put("a")},
		{get("a")},
		{put("a"), put("b")},
		{put("a"), put("a")},
		{put("a"), get("a"), put("a")},
		{get("a"), put("b"), get("b"), put("c")},
		{put(""), put("")},
		ops(8, func(i int) *pb.RequestOp { return put(keyN(i)) }),
		ops(8, func(i int) *pb.RequestOp { return put(keyN(i % 7)) }),
		ops(9, func(i int) *pb.RequestOp { return put(keyN(i)) }),
		ops(9, func(i int) *pb.RequestOp { return put(keyN(i % 8)) }),
		{put("a"), del("a", "")},
		{put("a"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{put("a")}})},
	}
	for i, b := range branches {
		_, _, want := checkIntervals(b)
		if got := checkBranchIntervals(b); !sameError(got, want) {
			t.Errorf("branch %d: checkBranchIntervals = %v, checkIntervals = %v", i, got, want)
		}
	}
}

func TestCheckRequestSize(t *testing.T) {
	const limit = 1024
	small := &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 100)}
	if err := checkRequestSize(small, limit); err != nil {
		t.Fatalf("small request: %v", err)
	}
	big := &pb.PutRequest{Key: []byte("k"), Value: make([]byte, limit)}
	if err := checkRequestSize(big, limit); !sameError(err, rpctypes.ErrGRPCRequestTooLarge) {
		t.Fatalf("big request: %v, want request too large", err)
	}
}

func TestAdjustChunkLimit(t *testing.T) {
	tests := []struct {
		last         int64
		size, target int
		want         int64
	}{
		{10, 100, 1000, 20},  // far below target: double
		{10, 600, 1000, 10},  // within [0.5x, 2x]: keep
		{10, 1900, 1000, 10}, // within: keep
		{10, 2500, 1000, 5},  // far above: halve
		{1, 5000, 1000, 1},   // never 0 (0 means unlimited)
	}
	for _, tt := range tests {
		if got := adjustChunkLimit(tt.last, tt.size, tt.target); got != tt.want {
			t.Errorf("adjustChunkLimit(%d, %d, %d) = %d, want %d", tt.last, tt.size, tt.target, got, tt.want)
		}
	}
}

func TestParseDowngradeVersion(t *testing.T) {
	for _, v := range []string{"3.6", "3.6.0", "3.6.9"} {
		got, err := parseDowngradeVersion(v)
		if err != nil || got.String() != "3.6.0" {
			t.Errorf("parseDowngradeVersion(%q) = %v, %v; want 3.6.0", v, got, err)
		}
	}
	for _, v := range []string{"", "three", "3"} {
		if _, err := parseDowngradeVersion(v); err == nil {
			t.Errorf("parseDowngradeVersion(%q) accepted", v)
		}
	}
}
