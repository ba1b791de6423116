package raftnode

import "go.etcd.io/raft/v3/raftpb"

// coalesceProposals merges the proposals a follower forwards to the leader
// in one Ready (one MsgProp per client request, as raft produces them) into
// as few MsgProp messages as fit maxBytes of encoded entries each. The leader
// appends a MsgProp's entries together (all or none, which is what it does
// for each of them alone when its log is full), so the merged message means
// the same; it costs one datagram, one marshal and one leader Step instead
// of one per request. Other messages keep their order; a merged MsgProp
// takes the place of the first one it absorbed.
func coalesceProposals(ms []*raftpb.Message, maxBytes uint64) []*raftpb.Message {
	props := 0
	for _, m := range ms {
		if m.GetType() == raftpb.MsgProp {
			props++
		}
	}
	if props < 2 {
		return ms
	}
	// open is the merged MsgProp still taking entries per destination, and
	// its entry bytes so far.
	type batch struct {
		m    *raftpb.Message
		size uint64
	}
	open := map[uint64]*batch{}
	out := ms[:0]
	for _, m := range ms {
		if m.GetType() != raftpb.MsgProp {
			out = append(out, m)
			continue
		}
		size := entriesSize(m.Entries)
		b := open[m.GetTo()]
		if b != nil && b.size+size <= maxBytes {
			b.m.Entries = append(b.m.Entries, m.Entries...)
			b.size += size
			continue
		}
		// A fresh message: raft may still hold the entries slice of m.
		merged := &raftpb.Message{Type: m.Type, To: m.To, From: m.From, Term: m.Term,
			Entries: append(make([]*raftpb.Entry, 0, len(m.Entries)+props-1), m.Entries...)}
		open[m.GetTo()] = &batch{m: merged, size: size}
		out = append(out, merged)
	}
	return out
}

// entryOverhead bounds an entry's encoding around its data inside a
// Message (tags, lengths, type, term, index), so a merged MsgProp of many
// tiny entries stays within the datagram size raft's messages are sized for.
const entryOverhead = 32

// entriesSize is the encoded size of ents, at most.
func entriesSize(ents []*raftpb.Entry) uint64 {
	var n uint64
	for _, e := range ents {
		n += uint64(len(e.Data)) + entryOverhead
	}
	return n
}
