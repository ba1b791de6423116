package mesh

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"go.uber.org/zap"
)

// Topology channel messages start with a kind byte.
const (
	topoMsgRecords     = 0 // records to merge; what is new is relayed on
	topoMsgDigest      = 1 // {name → uid, version}: push back what the sender lacks
	topoMsgDigestReply = 2 // the same, sent only when we lack something; never answered with a digest
)

// digestEntry is one record's identity in a digest.
type digestEntry struct {
	UID     uint64
	Version uint64
}

// topologyDigest is the GossipData of a digest on the topology channel.
type topologyDigest struct {
	entries map[PeerName]digestEntry
	reply   bool
}

// digestChunk bounds one encoded digest message (about 1000 peers).
const digestChunk = 32 << 10

func (d *topologyDigest) Encode() [][]byte {
	kind := byte(topoMsgDigest)
	if d.reply {
		kind = topoMsgDigestReply
	}
	names := make([]PeerName, 0, len(d.entries))
	for n := range d.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	var out [][]byte
	for len(names) > 0 {
		b := []byte{kind}
		var body []byte
		count := 0
		for len(names) > 0 && len(body) < digestChunk {
			e := d.entries[names[0]]
			body = appendShortString(body, string(names[0]))
			body = binary.BigEndian.AppendUint64(body, e.UID)
			body = binary.AppendUvarint(body, e.Version)
			names = names[1:]
			count++
		}
		b = binary.AppendUvarint(b, uint64(count))
		out = append(out, append(b, body...))
	}
	return out
}

// Merge keeps the latest digest; records arriving on top of a pending
// digest carry it along. other is never modified.
func (d *topologyDigest) Merge(other GossipData) GossipData {
	switch o := other.(type) {
	case *topologyDigest:
		return o
	case *topologyUpdate:
		u := &topologyUpdate{records: maps.Clone(o.records), digest: d}
		if o.digest != nil {
			u.digest = o.digest
		}
		return u
	default:
		return d
	}
}

func decodeDigest(b []byte) (map[PeerName]digestEntry, error) {
	dec := decoder{b: b}
	n := dec.uvarint()
	if dec.err != nil || n > maxUpdateRecords || n > uint64(len(dec.b)) {
		return nil, fmt.Errorf("%w: digest count", errBadRecord)
	}
	entries := make(map[PeerName]digestEntry, n)
	for i := uint64(0); i < n && dec.err == nil; i++ {
		name := PeerName(dec.shortString(maxNameLen))
		entries[name] = digestEntry{UID: dec.uint64(), Version: dec.uvarint()}
	}
	if dec.err != nil || len(dec.b) != 0 {
		return nil, fmt.Errorf("%w: malformed digest", errBadRecord)
	}
	return entries, nil
}

// digest summarises our records.
func (t *topology) digest() map[PeerName]digestEntry {
	d := make(map[PeerName]digestEntry, len(t.records))
	for n, r := range t.records {
		d[n] = digestEntry{UID: r.UID, Version: r.Version}
	}
	return d
}

// diffDigest compares a neighbour's digest with our records: push holds
// our records the neighbour lacks or has older copies of; lacking reports
// whether the neighbour has records newer than ours (that a tombstone does
// not block), so we should ask for them.
func (t *topology) diffDigest(theirs map[PeerName]digestEntry) (push []*peerRecord, lacking bool) {
	for _, n := range t.sortedNames() {
		ours := t.records[n]
		e, ok := theirs[n]
		if !ok || ours.newerThan(&peerRecord{UID: e.UID, Version: e.Version}) {
			push = append(push, ours.clone())
		}
	}
	for n, e := range theirs {
		if n == t.self {
			continue
		}
		if ts, ok := t.tombstones[n]; ok && e.Version <= ts.Version {
			continue
		}
		ours, ok := t.records[n]
		if !ok || (&peerRecord{UID: e.UID, Version: e.Version}).newerThan(ours) {
			lacking = true
		}
	}
	return push, lacking
}

// topologyDigest returns a digest of our records to send.
func (r *Router) topologyDigest(reply bool) *topologyDigest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &topologyDigest{entries: r.topo.digest(), reply: reply}
}

// onTopologyMessage handles a topology channel message from neighbour src.
func (r *Router) onTopologyMessage(ch *channel, src PeerName, msg []byte) error {
	if len(msg) == 0 {
		return fmt.Errorf("%w: empty topology message", errBadRecord)
	}
	switch msg[0] {
	case topoMsgRecords:
		delta, err := r.mergeTopology(msg[1:])
		if err == nil && delta != nil {
			r.gossipToNeighbours(ch, delta, src)
		}
		return err
	case topoMsgDigest, topoMsgDigestReply:
		theirs, err := decodeDigest(msg[1:])
		if err != nil {
			return err
		}
		r.mu.Lock()
		push, lacking := r.topo.diffDigest(theirs)
		var ours map[PeerName]digestEntry
		if lacking && msg[0] == topoMsgDigest {
			ours = r.topo.digest()
		}
		r.mu.Unlock()
		c := r.connFor(src)
		if c == nil {
			return nil
		}
		switch {
		case len(push) > 0:
			u := newTopologyUpdate(push)
			if ours != nil {
				u.digest = &topologyDigest{entries: ours, reply: true}
			}
			c.queueGossip(ch, u)
		case ours != nil:
			c.queueGossip(ch, &topologyDigest{entries: ours, reply: true})
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown topology message kind %d", errBadRecord, msg[0])
	}
}

// mergeTopology merges encoded records and returns what was new to us.
func (r *Router) mergeTopology(msg []byte) (GossipData, error) {
	recs, err := decodeRecords(msg)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	res := r.topo.merge(recs, r.cfg.Clock.Now())
	var otherUID uint64
	if res.collision {
		r.collision = r.topo.collision
		otherUID = r.collision.UID
	}
	r.mu.Unlock()
	if res.rejected > 0 {
		r.counters.rejectedRecords.Add(uint64(res.rejected))
	}
	if res.collision {
		r.log.Error("mesh name collision: another live peer uses our name; not fighting over it, fix the configuration",
			zap.String("name", string(r.name)), zap.Uint64("our_uid", r.uid), zap.Uint64("other_uid", otherUID))
	}
	if res.selfChanged {
		r.signalSelfChanged()
	}
	for _, p := range res.restarted {
		r.log.Info("mesh peer restarted", zap.String("peer", string(p)))
	}
	if len(res.improved) == 0 {
		return nil, nil
	}
	r.requestRecalc()
	r.maker.poke()
	return newTopologyUpdate(res.improved), nil
}

// topologyGossiper gives the topology channel its complete state (sent to
// new neighbours). Its messages are handled by onTopologyMessage, which
// needs the sender to answer digests.
type topologyGossiper struct{ r *Router }

func (g topologyGossiper) OnGossipUnicast(PeerName, []byte) error   { return nil }
func (g topologyGossiper) OnGossipBroadcast(PeerName, []byte) error { return nil }

func (g topologyGossiper) Gossip() GossipData {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	return newTopologyUpdate(r.topo.allRecords())
}

func (g topologyGossiper) OnGossip(msg []byte) (GossipData, error) {
	return nil, fmt.Errorf("mesh: topology messages are handled by the router")
}
