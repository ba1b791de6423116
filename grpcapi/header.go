package grpcapi

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/meshetcd/meshetcd/kvstore"
)

// header fills etcd's response header (cluster id, member id, raft term,
// revision) from the member's current state, like v3rpc/header.go.
//
// Unlike etcd it reads the cluster id and the store on every call instead of
// caching them at construction: a joining member learns its cluster id after
// the gRPC server exists, and a snapshot install swaps the store.
type header struct {
	info kvstore.Info
}

func newHeader(info kvstore.Info) header {
	return header{info: info}
}

// fill populates rh, keeping a revision the handler already set (a read at
// an older revision reports the store's current revision only when the
// applier left it at zero).
func (h header) fill(rh *pb.ResponseHeader) {
	h.fillWithoutRevision(rh)
	if rh.Revision == 0 {
		rh.Revision = h.info.KV().Rev()
	}
}

// fillWithoutRevision populates everything but the revision. Streaming
// handlers use it when the revision must be the one pinned by the handler
// rather than the live store revision.
func (h header) fillWithoutRevision(rh *pb.ResponseHeader) {
	if rh == nil {
		// A nil header is a bug in this package (every response is built
		// with one), never a consequence of client input; etcd panics too.
		panic("grpcapi: unexpected nil response header")
	}
	rh.ClusterId = uint64(h.info.ClusterID())
	rh.MemberId = uint64(h.info.MemberID())
	rh.RaftTerm = h.info.Term()
}
