package kvstore

import (
	"encoding/binary"

	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"

	"go.etcd.io/etcd/server/v3/storage/backend"
)

// Why requests are deduplicated at apply time: raft never resends a
// proposal the transport lost, and over the mesh a follower's forwarded
// proposal is lost whenever the link it was queued on dies silently (or a
// leader loses office before replicating it). The proposer therefore
// proposes the same request again while it waits (propose.go). Whether
// the first copy was lost cannot be known, so several copies may commit;
// every member then applies the first and skips the later ones. The decision must be identical on every member, including one
// restarted from its own backend or from a leader snapshot, so the record
// "request id → index it was applied at" lives in the backend, written in
// the same bbolt commit as the consistent index of that entry (by the
// post-lock hook), and is pruned at fixed log indexes.

// requestsBucket holds request id (8 bytes BE) → applied index (8 bytes
// BE). etcd ignores buckets it does not know (defrag and snapshots copy
// them).
var requestsBucket backend.Bucket = meshBucket{id: 200, name: []byte("meshetcd_requests")}

type meshBucket struct {
	id   backend.BucketID
	name []byte
}

func (b meshBucket) ID() backend.BucketID    { return b.id }
func (b meshBucket) Name() []byte            { return b.name }
func (b meshBucket) String() string          { return string(b.name) }
func (b meshBucket) IsSafeRangeBucket() bool { return false }

const (
	// dedupeWindow is how many log entries a request id is remembered.
	// A retry is proposed only while fewer than maxRetryEntries (a
	// quarter of this) were committed since the original (propose.go).
	dedupeWindow = 1 << 17
	// dedupePruneEvery: ids older than the window are pruned when the
	// applied index is a multiple of this (the same indexes everywhere).
	dedupePruneEvery = 1 << 12
)

// dedupe is owned by the apply goroutine (and New before raft starts).
type dedupe struct {
	seen map[uint64]uint64 // request id → index applied at
	// pending is recorded by the post-lock hook of the entry being applied.
	pendingID, pendingIndex uint64
}

// loadDedupe creates the bucket if needed and reads its records. Called in
// New and after a leader snapshot replaced the backend (neither runs under
// applyEntries, which ETCD_VERIFY=lock checks for LockOutsideApply).
func loadDedupe(be backend.Backend) map[uint64]uint64 {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	tx.UnsafeCreateBucket(requestsBucket)
	seen := map[uint64]uint64{}
	_ = tx.UnsafeForEach(requestsBucket, func(k, v []byte) error {
		if len(k) == 8 && len(v) == 8 {
			seen[binary.BigEndian.Uint64(k)] = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	tx.Unlock()
	return seen
}

// proposedAtField is a field of our own appended to a proposal's
// InternalRaftRequest bytes: the proposer's committed index when the
// request was first proposed (every copy carries the same value). etcd's
// apply ignores unknown fields. The number is far from etcd's and outside
// protobuf's reserved 19000-19999.
const proposedAtField protowire.Number = 536870900

// appendProposedAt stamps a marshalled request with its first-proposal
// commit index.
func appendProposedAt(data []byte, committed uint64) []byte {
	data = protowire.AppendTag(data, proposedAtField, protowire.VarintType)
	return protowire.AppendVarint(data, committed)
}

// requestID is the id apply.Apply answers the waiter of: the request's ID
// (field 1) or else its header's ID (field 100, field 1 inside). 0 when
// data is not an InternalRaftRequest with an id.
func requestID(data []byte) uint64 {
	id, _ := requestInfo(data)
	return id
}

// requestInfo is requestID plus the proposedAtField stamp (0 when absent,
// as in entries written before the stamp existed).
func requestInfo(data []byte) (reqID, proposedAt uint64) {
	var id, headerID uint64
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0, 0
		}
		data = data[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return 0, 0
			}
			id, n = v, m
		case num == proposedAtField && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return 0, 0
			}
			proposedAt, n = v, m
		case num == 100 && typ == protowire.BytesType:
			b, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return 0, 0
			}
			headerID, n = headerRequestID(b), m
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return 0, 0
			}
		}
		data = data[n:]
	}
	if id != 0 {
		return id, proposedAt
	}
	return headerID, proposedAt
}

func headerRequestID(b []byte) uint64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0
			}
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
}

// isDuplicate reports whether the request in an entry at index was already
// applied at an earlier index; otherwise it marks it to be recorded with
// the entry's first backend write.
//
// A copy committed more than dedupeWindow entries after the commit index its
// proposer stamped is skipped as well: the original (committed after that
// stamp) might already have been pruned from the records, so applying the
// copy could apply the request twice. Such a copy can only be a retry that
// travelled very long (a paused proposer, a queue on a dying link); its
// client has long timed out. The decision depends only on the entry, so
// every member makes it alike.
func (s *Server) isDuplicate(data []byte, index uint64) bool {
	id, proposedAt := requestInfo(data)
	if id == 0 {
		return false
	}
	if proposedAt != 0 && index > proposedAt+dedupeWindow {
		s.lg.Warn("skipped a request copy committed too long after it was proposed",
			zap.Uint64("request-id", id), zap.Uint64("proposed-at-commit", proposedAt), zap.Uint64("index", index))
		return true
	}
	if at, ok := s.dd.seen[id]; ok && at < index {
		s.lg.Info("skipped a retried request that was already applied",
			zap.Uint64("request-id", id), zap.Uint64("applied-at", at), zap.Uint64("duplicate-at", index))
		return true
	}
	s.dd.pendingID, s.dd.pendingIndex = id, index
	return false
}

// recordPending writes the pending record; the post-lock hook calls it with
// the batch transaction locked, so it commits with the entry's consistent
// index and data.
func (s *Server) recordPending(tx backend.BatchTx, applyingIdx uint64) {
	if s.dd.pendingID == 0 || s.dd.pendingIndex != applyingIdx {
		return
	}
	var k, v [8]byte
	binary.BigEndian.PutUint64(k[:], s.dd.pendingID)
	binary.BigEndian.PutUint64(v[:], applyingIdx)
	tx.UnsafePut(requestsBucket, k[:], v[:])
	s.dd.seen[s.dd.pendingID] = applyingIdx
	s.dd.pendingID, s.dd.pendingIndex = 0, 0
}

// flushPending records the pending id when the apply wrote nothing (a
// failed compare, a read-only txn, an error): the hook writes it together
// with the consistent index moving to this entry.
func (s *Server) flushPending() {
	if s.dd.pendingID == 0 {
		return
	}
	tx := s.Backend().BatchTx()
	tx.LockInsideApply()
	tx.Unlock()
	s.dd.pendingID, s.dd.pendingIndex = 0, 0
}

// pruneDedupe forgets ids older than the window, at fixed indexes so every
// member forgets the same ones at the same point of the log.
func (s *Server) pruneDedupe(index uint64) {
	if index%dedupePruneEvery != 0 || index <= dedupeWindow {
		return
	}
	oldest := index - dedupeWindow
	tx := s.Backend().BatchTx()
	tx.LockInsideApply()
	for id, at := range s.dd.seen {
		if at < oldest {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], id)
			tx.UnsafeDelete(requestsBucket, k[:])
			delete(s.dd.seen, id)
		}
	}
	tx.Unlock()
}
