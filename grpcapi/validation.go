package grpcapi

import (
	"bytes"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/pkg/v3/adt"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
)

// Request validation done before anything is proposed, as etcd's v3rpc does
// in key.go: the applier trusts these invariants. Getters are used
// throughout so that a nil message (impossible off the wire, possible from an
// in-process caller) is rejected rather than dereferenced.

func checkRangeRequest(r *pb.RangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

// checkRangeStreamRequest adds RangeStream's own limits: results come in key
// order and revision filters are not supported (etcd 3.7's wording).
func checkRangeStreamRequest(r *pb.RangeRequest) error {
	if err := checkRangeRequest(r); err != nil {
		return err
	}
	if !txn.IsDefaultOrdering(r.SortTarget, r.SortOrder) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if txn.HasRevisionFilters(r) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	return nil
}

func checkPutRequest(r *pb.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDeleteRequest(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxnRequest limits every branch (compares, success, failure) to
// maxTxnOps operations; a nested txn gets the budget its parent left over,
// exactly like etcd.
func checkTxnRequest(r *pb.TxnRequest, maxTxnOps int) error {
	opc := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, u := range r.GetSuccess() {
		if err := checkRequestOp(u, maxTxnOps-opc); err != nil {
			return err
		}
	}
	for _, u := range r.GetFailure() {
		if err := checkRequestOp(u, maxTxnOps-opc); err != nil {
			return err
		}
	}
	return nil
}

func checkRequestOp(u *pb.RequestOp, maxTxnOps int) error {
	switch uv := u.GetRequest().(type) {
	case *pb.RequestOp_RequestRange:
		return checkRangeRequest(uv.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPutRequest(uv.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return checkDeleteRequest(uv.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnRequest(uv.RequestTxn, maxTxnOps)
	default:
		// An empty op or nil entry: etcd answers "key not found".
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// checkTxnIntervals rejects a txn in which a key is written twice on one
// execution path (put+put or put+delete, including through nested txns).
// It runs after checkTxnRequest, which bounds its cost.
func checkTxnIntervals(r *pb.TxnRequest) error {
	if err := checkBranchIntervals(r.GetSuccess()); err != nil {
		return err
	}
	return checkBranchIntervals(r.GetFailure())
}

// checkBranchIntervals is checkIntervals for one top-level branch. A branch
// of only puts and ranges (the usual txn) can only conflict through two puts
// of one key, which is checked without building checkIntervals' interval
// tree and map; anything with a delete or a nested txn takes the full check.
func checkBranchIntervals(reqs []*pb.RequestOp) error {
	for _, req := range reqs {
		switch req.GetRequest().(type) {
		case *pb.RequestOp_RequestPut, *pb.RequestOp_RequestRange:
		default:
			_, _, err := checkIntervals(reqs)
			return err
		}
	}
	// Quadratic only up to a handful of puts; checkTxnRequest has bounded
	// the count by then.
	if len(reqs) > 8 {
		_, _, err := checkIntervals(reqs)
		return err
	}
	for i, req := range reqs {
		p := req.GetRequestPut()
		if p == nil {
			continue
		}
		for _, later := range reqs[i+1:] {
			if q := later.GetRequestPut(); q != nil && bytes.Equal(p.Key, q.Key) {
				return rpctypes.ErrGRPCDuplicateKey
			}
		}
	}
	return nil
}

// checkIntervals tests whether puts and deletes overlap for a list of ops.
// If there is no overlap it returns the put and delete sets for the caller
// one level up. Same algorithm as etcd's, so the same txns are accepted.
func checkIntervals(reqs []*pb.RequestOp) (map[string]struct{}, adt.IntervalTree, error) {
	dels := adt.NewIntervalTree()

	// Deletes of this level first, so puts of nested txns can be checked
	// against them.
	for _, req := range reqs {
		dreq := req.GetRequestDeleteRange()
		if dreq == nil {
			continue
		}
		var iv adt.Interval
		if len(dreq.RangeEnd) != 0 {
			iv = adt.NewStringAffineInterval(string(dreq.Key), string(dreq.RangeEnd))
		} else {
			iv = adt.NewStringAffinePoint(string(dreq.Key))
		}
		dels.Insert(iv, struct{}{})
	}

	// Puts and deletes of nested txns.
	puts := make(map[string]struct{})
	for _, req := range reqs {
		t := req.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(t.Success)
		if err != nil {
			return nil, dels, err
		}
		putsElse, delsElse, err := checkIntervals(t.Failure)
		if err != nil {
			return nil, dels, err
		}
		for k := range putsThen {
			if _, ok := puts[k]; ok {
				return nil, dels, rpctypes.ErrGRPCDuplicateKey
			}
			if dels.Intersects(adt.NewStringAffinePoint(k)) {
				return nil, dels, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, ok := puts[k]; ok {
				// then and else are mutually exclusive: the same key in
				// both branches of one nested txn is fine.
				if _, isSafe := putsThen[k]; !isSafe {
					return nil, dels, rpctypes.ErrGRPCDuplicateKey
				}
			}
			if dels.Intersects(adt.NewStringAffinePoint(k)) {
				return nil, dels, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels.Union(delsThen, adt.NewStringAffineInterval("\x00", ""))
		dels.Union(delsElse, adt.NewStringAffineInterval("\x00", ""))
	}

	// Puts of this level.
	for _, req := range reqs {
		preq := req.GetRequestPut()
		if preq == nil {
			continue
		}
		k := string(preq.Key)
		if _, ok := puts[k]; ok {
			return nil, dels, rpctypes.ErrGRPCDuplicateKey
		}
		if dels.Intersects(adt.NewStringAffinePoint(k)) {
			return nil, dels, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}

// checkRequestSize rejects a write whose encoding alone exceeds
// --max-request-bytes. etcd checks the marshalled raft request, which is
// strictly larger, so this never rejects what etcd accepts; kvstore's own
// check catches the remaining few bytes of difference with the same error.
func checkRequestSize(m proto.Message, maxBytes uint) error {
	if uint(proto.Size(m)) > maxBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}
