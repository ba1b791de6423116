package kvstore

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"go.etcd.io/etcd/server/v3/storage/backend"
)

// Why requests are deduplicated at apply time: raft never resends a
// proposal the transport lost, and over the mesh a follower's forwarded
// proposal is lost whenever the link it was queued on dies silently (or a
// leader loses office before replicating it). The proposer therefore
// proposes the same request again while it waits (propose.go). Whether
// the first copy was lost cannot be known, so several copies may commit;
// every member then applies the first and skips the later ones. The
// decision must be identical on every member, including one restarted from
// its own backend or from a leader snapshot, so the record "request id →
// index it was applied at" lives in the backend: the records of the
// entries applied since the last bbolt commit are written by the pre-commit
// hook, in the same commit as the consistent index that covers them (one
// bbolt value per commit, not one put per request). Ids are pruned at fixed
// log indexes.
//
// Where the records live in memory, and why so: the apply goroutine looks
// every request up, so they are in memory, never read from bbolt mid-apply
// (a read under the batch lock would stall every writer). Up to
// dedupeWindow ids are kept; as a Go map that is ~36 B an id (4.5 MiB,
// doubled by the GC goal). Instead the ids applied in the current
// dedupePruneEvery block sit in a small map, and at every block boundary
// they are merged into one slice sorted by id (16 B an id, no growth
// slack beyond append's), which a binary search answers.

// requestsBucket holds one record group per bbolt commit: key = first and
// last applied index of the group (8 bytes BE each), value = (request id,
// applied index) pairs (8 bytes BE each). Members written before groups
// existed kept one key per request (id → index); loadDedupe converts them.
// etcd ignores buckets it does not know (defrag and snapshots copy them).
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

// fenceEvery is the stride of dedupe.fence: a run of ids spans a few
// cache lines.
const fenceEvery = 32

// dedupeRecord is one applied request: its id and the index it was
// applied at.
type dedupeRecord struct{ id, index uint64 }

// dedupe is owned by the apply goroutine (and New before raft starts).
type dedupe struct {
	// recent are the ids applied since the last block boundary.
	recent map[uint64]uint64
	// ids (sorted) and at (parallel: the index each was applied at) are
	// the older ids still in the window.
	ids, at []uint64
	// fence is every fenceEvery-th id: a search narrows to one short run
	// of ids inside this small (cache-resident) slice first.
	fence []uint64
	// journal carries records to the backend's next commit.
	journal *dedupeJournal
}

// newDedupe builds the lookup state from records (any order, ids unique).
func newDedupe(records []dedupeRecord, j *dedupeJournal) dedupe {
	slices.SortFunc(records, func(a, b dedupeRecord) int { return cmp.Compare(a.id, b.id) })
	d := dedupe{recent: map[uint64]uint64{}, ids: make([]uint64, 0, len(records)), at: make([]uint64, 0, len(records)), journal: j}
	for i, r := range records {
		if i > 0 && records[i-1].id == r.id {
			continue // a group and a replay both recorded it
		}
		d.ids = append(d.ids, r.id)
		d.at = append(d.at, r.index)
	}
	d.buildFence()
	return d
}

// buildFence samples ids after they changed.
func (d *dedupe) buildFence() {
	d.fence = d.fence[:0]
	for i := 0; i < len(d.ids); i += fenceEvery {
		d.fence = append(d.fence, d.ids[i])
	}
}

// lookup is the index id was applied at.
func (d *dedupe) lookup(id uint64) (uint64, bool) {
	if at, ok := d.recent[id]; ok {
		return at, true
	}
	// The run that can hold id starts at the last fence post <= id.
	post, ok := slices.BinarySearch(d.fence, id)
	if !ok {
		if post == 0 {
			return 0, false
		}
		post--
	}
	lo := post * fenceEvery
	run := d.ids[lo:min(lo+fenceEvery, len(d.ids))]
	if i, ok := slices.BinarySearch(run, id); ok {
		return d.at[lo+i], true
	}
	return 0, false
}

// add remembers id as applied at index and journals the record.
func (d *dedupe) add(id, index uint64) {
	d.recent[id] = index
	d.journal.add(dedupeRecord{id: id, index: index})
}

// seal forgets ids applied before oldest (0: none), then merges recent
// into the sorted slices in place from the back, so no second copy of the
// window is ever made. The slices grow a block at a time: once the window
// is full they stop growing (a block pruned, a block merged).
func (d *dedupe) seal(oldest uint64) {
	if oldest != 0 {
		kept := 0
		for k, at := range d.at {
			if at >= oldest {
				d.ids[kept], d.at[kept] = d.ids[k], at
				kept++
			}
		}
		d.ids, d.at = d.ids[:kept], d.at[:kept]
	}
	defer d.buildFence()
	n := len(d.recent)
	if n == 0 {
		return
	}
	add := make([]dedupeRecord, 0, n)
	for id, at := range d.recent {
		add = append(add, dedupeRecord{id, at})
	}
	clear(d.recent)
	slices.SortFunc(add, func(a, b dedupeRecord) int { return cmp.Compare(a.id, b.id) })
	i, j := len(d.ids)-1, len(add)-1
	d.ids, d.at = growBy(d.ids, n), growBy(d.at, n)
	for k := len(d.ids) - 1; j >= 0; k-- {
		if i >= 0 && d.ids[i] > add[j].id {
			d.ids[k], d.at[k] = d.ids[i], d.at[i]
			i--
		} else {
			d.ids[k], d.at[k] = add[j].id, add[j].index
			j--
		}
	}
}

// growBy extends s by n elements, reallocating with room for one more
// block rather than append's proportional slack.
func growBy(s []uint64, n int) []uint64 {
	if len(s)+n <= cap(s) {
		return s[:len(s)+n]
	}
	grown := make([]uint64, len(s)+n, len(s)+n+dedupePruneEvery)
	copy(grown, s)
	return grown
}

// size is how many ids are remembered.
func (d *dedupe) size() int { return len(d.recent) + len(d.ids) }

// dedupeJournal is what one backend's pre-commit hook writes: the records
// applied since its last commit, and the groups already in the backend
// (for pruning without reading bbolt). The apply goroutine adds; whoever
// commits the backend (its batch timer, a snapshot, Close) saves.
type dedupeJournal struct {
	mu      sync.Mutex
	unsaved []dedupeRecord
	saved   []dedupeGroup
}

// dedupeGroup is the key of one record group: its first and last index.
type dedupeGroup struct{ first, last uint64 }

func (g dedupeGroup) key() []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, g.first)
	binary.BigEndian.PutUint64(k[8:], g.last)
	return k
}

func (j *dedupeJournal) add(r dedupeRecord) {
	j.mu.Lock()
	j.unsaved = append(j.unsaved, r)
	j.mu.Unlock()
}

// save writes the unsaved records as one group. It runs in the backend's
// pre-commit hook (batch transaction locked), so the records commit with
// the consistent index: every entry the index covers passed isDuplicate,
// and so journaled its record, before the index moved to it.
func (j *dedupeJournal) save(tx backend.UnsafeWriter) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.unsaved) == 0 {
		return
	}
	g := dedupeGroup{first: j.unsaved[0].index, last: j.unsaved[len(j.unsaved)-1].index}
	v := make([]byte, 0, 16*len(j.unsaved))
	for _, r := range j.unsaved {
		v = binary.BigEndian.AppendUint64(v, r.id)
		v = binary.BigEndian.AppendUint64(v, r.index)
	}
	tx.UnsafePut(requestsBucket, g.key(), v)
	j.saved = append(j.saved, g)
	j.unsaved = j.unsaved[:0]
}

// expire removes and returns the saved groups whose records all precede
// oldest.
func (j *dedupeJournal) expire(oldest uint64) []dedupeGroup {
	j.mu.Lock()
	defer j.mu.Unlock()
	var gone []dedupeGroup
	kept := j.saved[:0]
	for _, g := range j.saved {
		if g.last < oldest {
			gone = append(gone, g)
		} else {
			kept = append(kept, g)
		}
	}
	j.saved = kept
	return gone
}

// dedupeHooks are the backend's pre-commit hooks: etcd's (consistent index,
// ConfState) and the dedupe journal of that backend.
type dedupeHooks struct {
	etcd    backend.Hooks
	journal *dedupeJournal
}

func (h dedupeHooks) OnPreCommitUnsafe(tx backend.UnsafeReadWriter) {
	h.etcd.OnPreCommitUnsafe(tx)
	h.journal.save(tx)
}

// backendHooks are the hooks for a backend about to be opened, with a
// journal of its own: a backend replaced by a leader snapshot may still
// commit (on Close) and must not take the new backend's records along.
func (s *Server) backendHooks() dedupeHooks {
	return dedupeHooks{etcd: s.beHooks, journal: &dedupeJournal{}}
}

// pruneBefore is the oldest applied index a member that applied up to
// index still remembers: pruning happens at fixed indexes.
func pruneBefore(index uint64) uint64 {
	p := index - index%dedupePruneEvery
	if p <= dedupeWindow {
		return 0
	}
	return p - dedupeWindow
}

// loadDedupe creates the bucket if needed and reads its records (those a
// member that applied up to the consistent index still remembers),
// converting per-request records of older versions into one group. Called
// in New and after a leader snapshot replaced the backend (neither runs
// under applyEntries, which ETCD_VERIFY=lock checks for LockOutsideApply).
func loadDedupe(be backend.Backend, j *dedupeJournal, applied uint64) dedupe {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	tx.UnsafeCreateBucket(requestsBucket)
	oldest := pruneBefore(applied)
	var records, legacy []dedupeRecord
	var saved []dedupeGroup
	_ = tx.UnsafeForEach(requestsBucket, func(k, v []byte) error {
		switch {
		case len(k) == 8 && len(v) == 8:
			legacy = append(legacy, dedupeRecord{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v)})
		case len(k) == 16 && len(v)%16 == 0:
			saved = append(saved, dedupeGroup{binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:])})
			for ; len(v) > 0; v = v[16:] {
				if r := (dedupeRecord{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}); r.index >= oldest {
					records = append(records, r)
				}
			}
		}
		return nil
	})
	if len(legacy) > 0 {
		slices.SortFunc(legacy, func(a, b dedupeRecord) int { return cmp.Compare(a.index, b.index) })
		var k [8]byte
		for _, r := range legacy {
			binary.BigEndian.PutUint64(k[:], r.id)
			tx.UnsafeDelete(requestsBucket, k[:])
		}
		j.unsaved = legacy
		j.save(tx)
		for _, r := range legacy {
			if r.index >= oldest {
				records = append(records, r)
			}
		}
	}
	j.mu.Lock()
	j.saved = append(j.saved, saved...)
	j.mu.Unlock()
	return newDedupe(records, j)
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

// proposedAtMaxLen is the most appendProposedAt adds: the tag of a field
// number that high (5 bytes) and a 64-bit varint (10).
const proposedAtMaxLen = 5 + 10

// marshalProposal marshals r into a buffer with room for the stamp, so
// stamping does not copy the whole request again, and stamps it. size is
// the request's own size (what --max-request-bytes limits).
func marshalProposal(r *pb.InternalRaftRequest, committed uint64) (data []byte, size int, err error) {
	size = proto.Size(r)
	data, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, size+proposedAtMaxLen), r)
	if err != nil {
		return nil, 0, err
	}
	return appendProposedAt(data, committed), size, nil
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
// applied at an earlier index; otherwise it remembers it as applied at index
// (the record reaches the backend with the next commit).
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
	if at, ok := s.dd.lookup(id); ok {
		if at < index {
			s.lg.Info("skipped a retried request that was already applied",
				zap.Uint64("request-id", id), zap.Uint64("applied-at", at), zap.Uint64("duplicate-at", index))
			return true
		}
		// Re-applying the entry its record names (the record committed
		// just before the consistent index moved past it): apply, the
		// record stands.
		return false
	}
	s.dd.add(id, index)
	return false
}

// pruneDedupe moves the block's ids into the sorted slices at every block
// boundary and forgets ids older than the window, at fixed indexes so every
// member forgets the same ones at the same point of the log. Expired groups
// are deleted from the backend by key, without reading it.
func (s *Server) pruneDedupe(index uint64) {
	if index%dedupePruneEvery != 0 {
		return
	}
	oldest := pruneBefore(index)
	s.dd.seal(oldest)
	if oldest == 0 {
		return
	}
	gone := s.dd.journal.expire(oldest)
	if len(gone) == 0 {
		return
	}
	tx := s.Backend().BatchTx()
	tx.LockInsideApply()
	for _, g := range gone {
		tx.UnsafeDelete(requestsBucket, g.key())
	}
	tx.Unlock()
}
