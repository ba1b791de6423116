package kvstore

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
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
// doubled by the GC goal), as sorted (id, index) pairs 16 B. Instead the
// ids applied in the current dedupePruneEvery block sit in a small map,
// and at every block boundary they are merged into a packed sorted list:
// runs of dedupeRunLen records, each run's first record in full and the
// others as varint deltas from their predecessor. Request ids come from
// etcd's idutil generator, a counter per member, so consecutive ids differ
// by a little and were applied a few entries apart: 2-4 bytes a record
// instead of 16. A lookup binary-searches the runs and decodes one.

// requestsBucket holds one record group per bbolt commit: key = first and
// last applied index of the group (8 bytes BE each) and the format byte
// groupPacked, value = per record in apply order the uvarint index delta
// and the zigzag-varint id delta from the record before (the first from
// the group's first index and id 0): 2-4 bytes a record, as in memory, so
// the groups every commit writes (and bbolt reads back through its mmap to
// rewrite the bucket's last leaf) stay small. Earlier versions wrote
// 16-byte keys with (request id, applied index) pairs (8 bytes BE each),
// and before groups existed one key per request (id → index); loadDedupe
// reads both, converting the per-request form into one group.
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

// dedupeRunLen is how many sealed records one run holds: a lookup
// decodes at most one run.
const dedupeRunLen = 32

// dedupeRecord is one applied request: its id and the index it was
// applied at.
type dedupeRecord struct{ id, index uint64 }

// dedupeRun is where one run of sealed records starts: its first record in
// full, and where the others begin in dedupe.packed.
type dedupeRun struct {
	id, at uint64
	// minAt is the run's oldest index: a seal that prunes nothing from
	// the run and merges nothing into it copies its bytes as they are.
	minAt uint64
	// off is where the deltas of its other n-1 records start.
	off, n uint32
}

// dedupe is owned by the apply goroutine (and New before raft starts).
type dedupe struct {
	// recent are the ids applied since the last block boundary.
	recent map[uint64]uint64
	// runs and packed hold the older ids still in the window, sorted by
	// id (see dedupeRunLen); sealed counts them.
	runs   []dedupeRun
	packed []byte
	sealed int
	// journal carries records to the backend's next commit.
	journal *dedupeJournal
	// loadedThrough is the applied index of the backend the records were
	// loaded from (this member's own at start, a leader's after a
	// snapshot): a request recorded at or below it was applied before
	// this process applied anything from its log, so no waiter of this
	// process was answered for it.
	loadedThrough uint64
}

// newDedupe builds the lookup state from records (any order).
func newDedupe(records []dedupeRecord, j *dedupeJournal) dedupe {
	slices.SortFunc(records, func(a, b dedupeRecord) int { return cmp.Compare(a.id, b.id) })
	var p dedupePacker
	p.grow(len(records))
	for i, r := range records {
		if i > 0 && records[i-1].id == r.id {
			continue // a group and a replay both recorded it
		}
		p.add(r.id, r.index)
	}
	return dedupe{recent: map[uint64]uint64{}, runs: p.runs, packed: p.packed, sealed: p.n, journal: j}
}

// lookup is the index id was applied at.
func (d *dedupe) lookup(id uint64) (uint64, bool) {
	if at, ok := d.recent[id]; ok {
		return at, true
	}
	i, found := slices.BinarySearchFunc(d.runs, id, func(r dedupeRun, id uint64) int { return cmp.Compare(r.id, id) })
	if found {
		return d.runs[i].at, true
	}
	if i == 0 {
		return 0, false
	}
	// id can only be in the run before the first run that starts above it.
	r := d.runs[i-1]
	end := len(d.packed)
	if i < len(d.runs) {
		end = int(d.runs[i].off)
	}
	u := dedupeUnpacker{packed: d.packed[r.off:end], id: r.id, at: r.at}
	for u.next() {
		if u.id == id {
			return u.at, true
		}
		if u.id > id {
			break
		}
	}
	return 0, false
}

// add remembers id as applied at index and journals the record.
func (d *dedupe) add(id, index uint64) {
	d.recent[id] = index
	d.journal.add(dedupeRecord{id: id, index: index})
}

// seal forgets ids applied before oldest (0: none) and merges recent into
// the packed list, which it writes anew: the old one (a few bytes an id)
// is garbage afterwards.
func (d *dedupe) seal(oldest uint64) {
	n := len(d.recent)
	if n == 0 && oldest == 0 {
		return
	}
	add := make([]dedupeRecord, 0, n)
	for id, at := range d.recent {
		add = append(add, dedupeRecord{id, at})
	}
	clear(d.recent)
	slices.SortFunc(add, func(a, b dedupeRecord) int { return cmp.Compare(a.id, b.id) })
	var p dedupePacker
	p.grow(d.sealed + n)
	for i, run := range d.runs {
		end, next := len(d.packed), uint64(math.MaxUint64)
		if i+1 < len(d.runs) {
			end, next = int(d.runs[i+1].off), d.runs[i+1].id
		}
		if run.minAt >= oldest && (len(add) == 0 || add[0].id >= next) {
			p.copyRun(run, d.packed[run.off:end])
			continue
		}
		u := dedupeUnpacker{packed: d.packed[run.off:end], id: run.id, at: run.at}
		for ok := true; ok; ok = u.next() {
			for len(add) > 0 && add[0].id < u.id {
				p.add(add[0].id, add[0].index)
				add = add[1:]
			}
			if oldest == 0 || u.at >= oldest {
				p.add(u.id, u.at)
			}
		}
	}
	for _, r := range add {
		p.add(r.id, r.index)
	}
	d.runs, d.packed, d.sealed = p.runs, p.packed, p.n
}

// dedupeUnpacker decodes the deltas of one run after its first record.
type dedupeUnpacker struct {
	packed []byte
	id, at uint64
}

func (u *dedupeUnpacker) next() bool {
	if len(u.packed) == 0 {
		return false
	}
	did, n := binary.Uvarint(u.packed)
	dat, m := binary.Varint(u.packed[n:])
	u.packed = u.packed[n+m:]
	u.id += did
	u.at += uint64(dat)
	return true
}

// dedupePacker builds a packed list from records added in id order.
type dedupePacker struct {
	runs   []dedupeRun
	packed []byte
	n      int
	// inRun counts the records of the last run (dedupeRunLen: start a
	// new one).
	inRun          int
	prevID, prevAt uint64
}

// grow makes room for about n records: 3 bytes each, the common size of
// the deltas of one member's ids.
func (p *dedupePacker) grow(n int) {
	p.runs = slices.Grow(p.runs, n/dedupeRunLen+1)
	p.packed = slices.Grow(p.packed, 3*n)
}

func (p *dedupePacker) add(id, at uint64) {
	if p.inRun == dedupeRunLen || len(p.runs) == 0 {
		p.runs = append(p.runs, dedupeRun{id: id, at: at, minAt: at, off: uint32(len(p.packed)), n: 1})
		p.inRun = 0
	} else {
		p.packed = binary.AppendUvarint(p.packed, id-p.prevID)
		p.packed = binary.AppendVarint(p.packed, int64(at-p.prevAt))
		last := &p.runs[len(p.runs)-1]
		last.minAt = min(last.minAt, at)
		last.n++
	}
	p.prevID, p.prevAt = id, at
	p.inRun++
	p.n++
}

// copyRun appends a whole run of another list (its first record and the
// deltas that follow) as a run of its own.
func (p *dedupePacker) copyRun(run dedupeRun, deltas []byte) {
	run.off = uint32(len(p.packed))
	p.runs = append(p.runs, run)
	p.packed = append(p.packed, deltas...)
	p.inRun = dedupeRunLen // the next record starts a run of its own
	p.n += int(run.n)
}

// size is how many ids are remembered.
func (d *dedupe) size() int { return len(d.recent) + d.sealed }

// dedupeJournal is what one backend's pre-commit hook writes: the records
// applied since its last commit, and the groups already in the backend
// (for pruning without reading bbolt). The apply goroutine adds; whoever
// commits the backend (its batch timer, a snapshot, Close) saves.
type dedupeJournal struct {
	mu      sync.Mutex
	unsaved []dedupeRecord
	saved   []dedupeGroup
}

// dedupeGroup is the key of one record group: its first and last index,
// and whether its value is packed (16-byte pairs otherwise, as earlier
// versions wrote).
type dedupeGroup struct {
	first, last uint64
	packed      bool
}

// groupPacked is the last byte of the key of a packed group.
const groupPacked = 1

func (g dedupeGroup) key() []byte {
	k := make([]byte, 16, 17)
	binary.BigEndian.PutUint64(k, g.first)
	binary.BigEndian.PutUint64(k[8:], g.last)
	if g.packed {
		k = append(k, groupPacked)
	}
	return k
}

// appendPackedGroup appends records (in apply order) in the packed group
// form, deltas from first and id 0.
func appendPackedGroup(v []byte, first uint64, records []dedupeRecord) []byte {
	prevIndex, prevID := first, uint64(0)
	for _, r := range records {
		v = binary.AppendUvarint(v, r.index-prevIndex)
		v = binary.AppendVarint(v, int64(r.id-prevID))
		prevIndex, prevID = r.index, r.id
	}
	return v
}

// readPackedGroup calls fn with each record of a packed group value; it
// stops at the first malformed byte.
func readPackedGroup(v []byte, first uint64, fn func(dedupeRecord)) {
	index, id := first, uint64(0)
	for len(v) > 0 {
		di, n := binary.Uvarint(v)
		if n <= 0 {
			return
		}
		did, m := binary.Varint(v[n:])
		if m <= 0 {
			return
		}
		v = v[n+m:]
		index, id = index+di, id+uint64(did)
		fn(dedupeRecord{id: id, index: index})
	}
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
	g := dedupeGroup{first: j.unsaved[0].index, last: j.unsaved[len(j.unsaved)-1].index, packed: true}
	v := appendPackedGroup(make([]byte, 0, 4*len(j.unsaved)+binary.MaxVarintLen64), g.first, j.unsaved)
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
		case len(k) == 17 && k[16] == groupPacked:
			g := dedupeGroup{first: binary.BigEndian.Uint64(k), last: binary.BigEndian.Uint64(k[8:]), packed: true}
			saved = append(saved, g)
			readPackedGroup(v, g.first, func(r dedupeRecord) {
				if r.index >= oldest {
					records = append(records, r)
				}
			})
		case len(k) == 16 && len(v)%16 == 0:
			saved = append(saved, dedupeGroup{first: binary.BigEndian.Uint64(k), last: binary.BigEndian.Uint64(k[8:])})
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
	d := newDedupe(records, j)
	d.loadedThrough = applied
	return d
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
//
// Skipping a copy also answers a local waiter that nothing else will
// answer (answerUnknownOutcome): one whose original was applied inside a
// loaded backend, or whose copies are all refused as too old.
func (s *Server) isDuplicate(data []byte, index uint64) bool {
	id, proposedAt := requestInfo(data)
	if id == 0 {
		return false
	}
	if proposedAt != 0 && index > proposedAt+dedupeWindow {
		s.lg.Warn("skipped a request copy committed too long after it was proposed",
			zap.Uint64("request-id", id), zap.Uint64("proposed-at-commit", proposedAt), zap.Uint64("index", index))
		s.answerUnknownOutcome(id)
		return true
	}
	if at, ok := s.dd.lookup(id); ok {
		if at < index {
			s.lg.Info("skipped a retried request that was already applied",
				zap.Uint64("request-id", id), zap.Uint64("applied-at", at), zap.Uint64("duplicate-at", index))
			if at <= s.dd.loadedThrough {
				// The original was applied inside a leader snapshot
				// this member restored (or before it restarted): if
				// its proposer still waits here, nothing will ever
				// answer it with the original's response.
				s.answerUnknownOutcome(id)
			}
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

// answerUnknownOutcome frees a local waiter whose request's response this
// member cannot know: the request was applied where this member did not
// apply it itself (or never will be). It gets etcd's "request timed out",
// the answer etcd gives a request whose outcome it cannot report, now
// rather than at the request timeout: a follower that caught up through a
// leader snapshot while a client's write of its own was in flight kept
// that client waiting 7 s. Trigger is a no-op when no waiter is left.
func (s *Server) answerUnknownOutcome(id uint64) {
	s.w.Trigger(id, &apply.Result{Err: servererrors.ErrTimeout})
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
