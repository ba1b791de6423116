package raftnode

import "go.etcd.io/raft/v3/raftpb"

// coalesceAppends merges the MsgApps a leader sends one follower in one
// Ready into as few messages as fit maxBytes of encoded entries each. Raft
// emits one MsgApp per proposal it steps (bcastAppend after each append),
// so under 100 clients a Ready holds dozens of one-entry appends per
// follower, each a datagram, a decode and a follower Step, and each answered
// by a MsgAppResp. Two appends merge only when the second continues the
// first exactly: same term, its Index is the first's last entry and its
// LogTerm that entry's term. The merged message then says what raft would
// have sent had the proposals arrived together (the later Commit wins: raft
// only raises it), and the follower's one MsgAppResp acknowledges every
// index the leader recorded in flight for the originals. A message of any
// other type to the same follower closes its open batch, so nothing moves
// past a message it followed.
func coalesceAppends(ms []*raftpb.Message, maxBytes uint64) []*raftpb.Message {
	apps := 0
	for _, m := range ms {
		if m.GetType() == raftpb.MsgApp {
			apps++
		}
	}
	if apps < 2 {
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
		if m.GetType() != raftpb.MsgApp {
			delete(open, to)
			out = append(out, m)
			continue
		}
		size := entriesSize(m.Entries)
		b := open[to]
		if b != nil && b.size+size <= maxBytes && continues(b.m, m) {
			if !b.merged {
				// A fresh message: raft may still hold the entries slice of
				// the original.
				c := &raftpb.Message{Type: b.m.Type, To: b.m.To, From: b.m.From, Term: b.m.Term,
					LogTerm: b.m.LogTerm, Index: b.m.Index, Commit: b.m.Commit,
					Entries: append(make([]*raftpb.Entry, 0, len(b.m.Entries)+len(m.Entries)+apps), b.m.Entries...)}
				out[b.pos] = c
				b.m, b.merged = c, true
			}
			b.m.Entries = append(b.m.Entries, m.Entries...)
			if m.GetCommit() > b.m.GetCommit() {
				b.m.Commit = m.Commit
			}
			b.size += size
			continue
		}
		open[to] = &batch{m: m, pos: len(out), size: size}
		out = append(out, m)
	}
	return out
}

// continues reports whether next appends right after prev's last entry in
// the same term, with nothing but entries and a commit index to carry.
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
