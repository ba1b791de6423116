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
	return coalesce(ms, raftpb.MsgProp, maxBytes, func(_, _ *raftpb.Message) bool { return true }, false)
}

// coalesceAppends merges the MsgApps a leader sends one follower in one
// Ready into as few messages as fit maxBytes of encoded entries each. Raft
// emits one MsgApp per proposal it steps (bcastAppend after each append),
// so under 100 clients a Ready holds dozens of one-entry appends per
// follower, each a datagram, a decode and a follower Step, and each answered
// by a MsgAppResp. Two appends merge only when the second continues the
// first exactly (continues). The merged message then says what raft would
// have sent had the proposals arrived together (the later Commit wins: raft
// only raises it), and the follower's one MsgAppResp acknowledges every
// index the leader recorded in flight for the originals. A message of any
// other type to the same follower closes its open batch, so nothing moves
// past a message it followed.
func coalesceAppends(ms []*raftpb.Message, maxBytes uint64) []*raftpb.Message {
	return coalesce(ms, raftpb.MsgApp, maxBytes, continues, true)
}

// coalesce merges the messages of type typ to each destination into as few
// as fit maxBytes of entries each, in order: a message joins its
// destination's open batch when joins(batch, it) holds and the entries fit,
// and otherwise opens a new batch in its own place. With otherCloses, any
// other message to that destination closes its batch. The merged message
// carries the first one's header and the highest Commit; it is a fresh
// message, because raft may still hold the originals' entry slices.
func coalesce(ms []*raftpb.Message, typ raftpb.MessageType, maxBytes uint64, joins func(batch, next *raftpb.Message) bool, otherCloses bool) []*raftpb.Message {
	count := 0
	for _, m := range ms {
		if m.GetType() == typ {
			count++
		}
	}
	if count < 2 {
		return ms
	}
	type batch struct {
		m      *raftpb.Message
		pos    int // m's place in out
		size   uint64
		merged bool // m is our copy, not raft's
	}
	open := map[uint64]*batch{}
	out := ms[:0]
	for _, m := range ms {
		to := m.GetTo()
		if m.GetType() != typ {
			if otherCloses {
				delete(open, to)
			}
			out = append(out, m)
			continue
		}
		size := entriesSize(m.Entries)
		b := open[to]
		if b == nil || b.size+size > maxBytes || !joins(b.m, m) {
			open[to] = &batch{m: m, pos: len(out), size: size}
			out = append(out, m)
			continue
		}
		if !b.merged {
			c := &raftpb.Message{Type: b.m.Type, To: b.m.To, From: b.m.From, Term: b.m.Term,
				LogTerm: b.m.LogTerm, Index: b.m.Index, Commit: b.m.Commit,
				Entries: append(make([]*raftpb.Entry, 0, len(b.m.Entries)+count-1), b.m.Entries...)}
			out[b.pos] = c
			b.m, b.merged = c, true
		}
		b.m.Entries = append(b.m.Entries, m.Entries...)
		if m.GetCommit() > b.m.GetCommit() {
			b.m.Commit = m.Commit
		}
		b.size += size
	}
	return out
}

// continues reports whether next appends right after prev's last entry in
// the same term (its Index is that entry's and its LogTerm that entry's
// term), with nothing but entries and a commit index to carry.
func continues(prev, next *raftpb.Message) bool {
	if next.GetTerm() != prev.GetTerm() || next.GetFrom() != prev.GetFrom() ||
		next.Context != nil || next.Snapshot != nil || next.GetReject() {
		return false
	}
	lastIndex, lastTerm := prev.GetIndex(), prev.GetLogTerm()
	if n := len(prev.Entries); n > 0 {
		lastIndex, lastTerm = prev.Entries[n-1].GetIndex(), prev.Entries[n-1].GetTerm()
	}
	return next.GetIndex() == lastIndex && next.GetLogTerm() == lastTerm
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
