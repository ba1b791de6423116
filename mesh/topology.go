package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// connRecord is one connection as its owner claims it.
type connRecord struct {
	Peer        PeerName
	Established bool
	Outbound    bool
}

// peerRecord is one peer's entry in the topology. Only its owner writes it;
// every change bumps Version. Version starts at the owner's boot time in
// Unix milliseconds, so a restarted peer's record supersedes its old one
// without relying on UID order.
type peerRecord struct {
	Name     PeerName
	UID      uint64
	Version  uint64
	NickName string
	Addrs    []string
	Conns    []connRecord // sorted by Peer
}

// newerThan is the merge order: higher version wins, then higher UID.
// Records equal in both come from the same writer and are the same record.
func (r *peerRecord) newerThan(o *peerRecord) bool {
	if r.Version != o.Version {
		return r.Version > o.Version
	}
	return r.UID > o.UID
}

func (r *peerRecord) clone() *peerRecord {
	c := *r
	c.Addrs = slices.Clone(r.Addrs)
	c.Conns = slices.Clone(r.Conns)
	return &c
}

// hasEstablished reports whether r claims an established connection to p.
func (r *peerRecord) hasEstablished(p PeerName) bool {
	i, ok := slices.BinarySearchFunc(r.Conns, p, func(c connRecord, p PeerName) int { return strings.Compare(string(c.Peer), string(p)) })
	return ok && r.Conns[i].Established
}

const (
	recordFormat = 1
	// maxRecordConns is the protocol bound on connections in one record;
	// Config.ConnLimit may be lower and is enforced at merge.
	maxRecordConns = 4096
	// maxUpdateRecords bounds the record count of one topology message.
	maxUpdateRecords = 4096
)

var errBadRecord = errors.New("mesh: malformed topology record")

func appendRecord(b []byte, r *peerRecord) []byte {
	b = append(b, recordFormat)
	b = appendShortString(b, string(r.Name))
	b = binary.BigEndian.AppendUint64(b, r.UID)
	b = binary.AppendUvarint(b, r.Version)
	b = appendShortString(b, r.NickName)
	b = append(b, uint8(len(r.Addrs)))
	for _, a := range r.Addrs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
		b = append(b, a...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Conns)))
	for _, c := range r.Conns {
		b = appendShortString(b, string(c.Peer))
		var flags uint8
		if c.Established {
			flags |= 1
		}
		if c.Outbound {
			flags |= 2
		}
		b = append(b, flags)
	}
	return b
}

// decodeRecord reads one record from d, checking every bound before it
// allocates for it.
func decodeRecord(d *decoder) (*peerRecord, error) {
	if f := d.uint8(); d.err == nil && f != recordFormat {
		return nil, fmt.Errorf("%w: format %d", errBadRecord, f)
	}
	r := &peerRecord{}
	r.Name = PeerName(d.shortString(maxNameLen))
	r.UID = d.uint64()
	r.Version = d.uvarint()
	r.NickName = d.shortString(maxNickNameLen)
	n := int(d.uint8())
	if n > maxAdvertiseAddrs {
		return nil, fmt.Errorf("%w: %d addresses", errBadRecord, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		l := int(d.uint16())
		if l == 0 || l > maxAddrLen {
			d.fail("address")
			break
		}
		r.Addrs = append(r.Addrs, string(d.bytes(l)))
	}
	nc := d.uvarint()
	if nc > maxRecordConns || nc*2 > uint64(len(d.b)) {
		d.fail("connection count")
	}
	if d.err == nil && nc > 0 {
		r.Conns = make([]connRecord, 0, nc)
	}
	for i := uint64(0); i < nc && d.err == nil; i++ {
		c := connRecord{Peer: PeerName(d.shortString(maxNameLen))}
		flags := d.uint8()
		c.Established, c.Outbound = flags&1 != 0, flags&2 != 0
		r.Conns = append(r.Conns, c)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRecord, d.err)
	}
	if err := validateName(r.Name); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRecord, err)
	}
	for i, c := range r.Conns {
		if err := validateName(c.Peer); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadRecord, err)
		}
		if c.Peer == r.Name {
			return nil, fmt.Errorf("%w: %s lists a connection to itself", errBadRecord, r.Name)
		}
		if i > 0 && r.Conns[i-1].Peer >= c.Peer {
			return nil, fmt.Errorf("%w: connections of %s not sorted and unique", errBadRecord, r.Name)
		}
	}
	return r, nil
}

// encodeRecords encodes a topology update: a count, then the records.
func encodeRecords(recs []*peerRecord) []byte {
	b := binary.AppendUvarint(nil, uint64(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

// decodeRecords decodes a topology update.
func decodeRecords(b []byte) ([]*peerRecord, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err != nil || n > maxUpdateRecords || n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: record count", errBadRecord)
	}
	recs := make([]*peerRecord, 0, n)
	for i := uint64(0); i < n; i++ {
		r, err := decodeRecord(&d)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(d.b))
	}
	return recs, nil
}

// tombstone remembers a garbage-collected record so a stale copy gossiped
// by a lagging peer cannot bring it back.
type tombstone struct {
	UID     uint64
	Version uint64
	Until   time.Time
	Addrs   []string // still worth dialling now and then: the peer may return
}

// collision describes another live peer using our name.
type collision struct {
	UID     uint64
	Version uint64
	Seen    time.Time
}

// topology is the local replica of the gossiped CRDT: a map of per-peer
// last-writer-wins registers, plus local-only tombstones. It is not safe
// for concurrent use; the router serialises access.
type topology struct {
	self       PeerName
	selfUID    uint64
	records    map[PeerName]*peerRecord
	tombstones map[PeerName]tombstone
	// unreachableSince starts each peer's GC grace period.
	unreachableSince map[PeerName]time.Time
	// superseded holds foreign incarnations of our own name that we have
	// out-versioned once, by UID, with the version we saw. Seeing such a
	// UID advance again means it is alive: a name collision, not a restart.
	superseded map[uint64]uint64
	collision  *collision
	maxPeers   int
	connLimit  int
}

func newTopology(self *peerRecord, maxPeers, connLimit int) *topology {
	return &topology{
		self:             self.Name,
		selfUID:          self.UID,
		records:          map[PeerName]*peerRecord{self.Name: self},
		tombstones:       map[PeerName]tombstone{},
		unreachableSince: map[PeerName]time.Time{},
		superseded:       map[uint64]uint64{},
		maxPeers:         maxPeers,
		connLimit:        connLimit,
	}
}

// selfRecord returns our own record.
func (t *topology) selfRecord() *peerRecord { return t.records[t.self] }

// mergeResult says what a merge changed.
type mergeResult struct {
	improved    []*peerRecord // records that were new to us: relay these
	restarted   []PeerName    // peers whose UID changed
	rejected    int           // records refused (bounds, tombstones, bad)
	selfChanged bool          // we bumped our own version to out-version an old incarnation
	collision   bool          // a collision was detected by this merge
}

// merge applies received records. It is commutative, associative and
// idempotent over the records it accepts.
func (t *topology) merge(recs []*peerRecord, now time.Time) mergeResult {
	var res mergeResult
	for _, r := range recs {
		if r.Name == t.self {
			t.mergeSelf(r, now, &res)
			continue
		}
		if len(r.Conns) > t.connLimit {
			res.rejected++
			continue
		}
		if ts, ok := t.tombstones[r.Name]; ok {
			if r.Version <= ts.Version {
				res.rejected++
				continue
			}
			delete(t.tombstones, r.Name)
		}
		old, ok := t.records[r.Name]
		if !ok && len(t.records) >= t.maxPeers {
			res.rejected++
			continue
		}
		if ok && !r.newerThan(old) {
			continue
		}
		if ok && old.UID != r.UID {
			res.restarted = append(res.restarted, r.Name)
		}
		t.records[r.Name] = r.clone()
		res.improved = append(res.improved, r)
	}
	return res
}

// mergeSelf handles a record carrying our own name.
func (t *topology) mergeSelf(r *peerRecord, now time.Time, res *mergeResult) {
	me := t.selfRecord()
	if r.UID == t.selfUID || r.Version < me.Version {
		return // our own past, or an older incarnation our record already beats
	}
	if seen, ok := t.superseded[r.UID]; ok && r.Version > seen {
		// That incarnation kept writing after we out-versioned it: it is
		// alive. Fighting would be an endless version war; flag it instead.
		if t.collision == nil {
			res.collision = true
		}
		t.collision = &collision{UID: r.UID, Version: r.Version, Seen: now}
		return
	}
	if _, ok := t.superseded[r.UID]; ok {
		return
	}
	// An old incarnation of ours (for example from before a clock step
	// back) with a version at or above ours: out-version it once.
	t.superseded[r.UID] = r.Version
	me.Version = r.Version + 1
	res.selfChanged = true
}

// setSelfConns replaces our own connections and bumps our version if they
// changed. It returns whether the record changed.
func (t *topology) setSelfConns(conns []connRecord) bool {
	me := t.selfRecord()
	slices.SortFunc(conns, func(a, b connRecord) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	if slices.Equal(me.Conns, conns) {
		return false
	}
	me.Conns = conns
	me.Version++
	return true
}

// gc moves records unreachable for longer than grace into tombstones and
// expires old tombstones. reachable holds peers we can route to; pinned
// peers (a live local connection or handshake) are never collected.
func (t *topology) gc(now time.Time, reachable func(PeerName) bool, pinned func(PeerName) bool, grace, tombstoneTTL time.Duration) []PeerName {
	var removed []PeerName
	for name, r := range t.records {
		if name == t.self || reachable(name) || pinned(name) {
			delete(t.unreachableSince, name)
			continue
		}
		since, ok := t.unreachableSince[name]
		if !ok {
			t.unreachableSince[name] = now
			continue
		}
		if now.Sub(since) >= grace {
			delete(t.records, name)
			delete(t.unreachableSince, name)
			t.tombstones[name] = tombstone{UID: r.UID, Version: r.Version, Until: now.Add(tombstoneTTL), Addrs: slices.Clone(r.Addrs)}
			removed = append(removed, name)
		}
	}
	for name, ts := range t.tombstones {
		if !now.Before(ts.Until) {
			delete(t.tombstones, name)
		}
	}
	slices.Sort(removed)
	return removed
}

// sortedNames returns the names of all records in order.
func (t *topology) sortedNames() []PeerName {
	names := make([]PeerName, 0, len(t.records))
	for n := range t.records {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// allRecords returns copies of all records in name order.
func (t *topology) allRecords() []*peerRecord {
	out := make([]*peerRecord, 0, len(t.records))
	for _, n := range t.sortedNames() {
		out = append(out, t.records[n].clone())
	}
	return out
}

// topologyUpdate is the GossipData of the topology channel: a set of
// records, merged per name by the CRDT order.
type topologyUpdate struct {
	records map[PeerName]*peerRecord
	// digest, if set, is sent after the records (a digest reply that
	// shares the pending slot with records).
	digest *topologyDigest
}

func newTopologyUpdate(recs []*peerRecord) *topologyUpdate {
	u := &topologyUpdate{records: make(map[PeerName]*peerRecord, len(recs))}
	for _, r := range recs {
		if old, ok := u.records[r.Name]; !ok || r.newerThan(old) {
			u.records[r.Name] = r
		}
	}
	return u
}

func (u *topologyUpdate) clone() GossipData {
	return &topologyUpdate{records: maps.Clone(u.records), digest: u.digest}
}

// topologyChunk bounds one encoded topology message so a big mesh is sent
// in several frames instead of one huge one.
const topologyChunk = 32 << 10

// Encode splits the records into messages of about topologyChunk bytes.
func (u *topologyUpdate) Encode() [][]byte {
	names := make([]PeerName, 0, len(u.records))
	for n := range u.records {
		names = append(names, n)
	}
	slices.Sort(names)
	var out [][]byte
	var batch []*peerRecord
	size := 0
	for _, n := range names {
		r := u.records[n]
		rs := len(appendRecord(nil, r))
		if len(batch) > 0 && size+rs > topologyChunk {
			out = append(out, append([]byte{topoMsgRecords}, encodeRecords(batch)...))
			batch, size = nil, 0
		}
		batch = append(batch, r)
		size += rs
	}
	if len(batch) > 0 {
		out = append(out, append([]byte{topoMsgRecords}, encodeRecords(batch)...))
	}
	if u.digest != nil {
		out = append(out, u.digest.Encode()...)
	}
	return out
}

// Merge folds other into u and returns u; a digest rides along with the
// records (the latest digest wins).
func (u *topologyUpdate) Merge(other GossipData) GossipData {
	if d, ok := other.(*topologyDigest); ok {
		u.digest = d
		return u
	}
	o, ok := other.(*topologyUpdate)
	if !ok {
		return u
	}
	if o.digest != nil {
		u.digest = o.digest
	}
	for n, r := range o.records {
		if old, ok := u.records[n]; !ok || r.newerThan(old) {
			u.records[n] = r
		}
	}
	return u
}
