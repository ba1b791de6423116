package raftnode

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func msg(typ raftpb.MessageType, to uint64, data ...string) *raftpb.Message {
	m := &raftpb.Message{Type: typ.Enum(), To: proto.Uint64(to), From: proto.Uint64(9)}
	for _, d := range data {
		m.Entries = append(m.Entries, &raftpb.Entry{Data: []byte(d)})
	}
	return m
}

func describe(ms []*raftpb.Message) string {
	s := ""
	for _, m := range ms {
		s += fmt.Sprintf("%s>%d", m.GetType(), m.GetTo())
		for _, e := range m.Entries {
			s += ":" + string(e.Data)
		}
		s += " "
	}
	return s
}

// TestCoalesceProposals: a follower's MsgProps to the same destination
// become one message per maxBytes of entry data, in proposal order, and
// every other message keeps its place.
func TestCoalesceProposals(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []*raftpb.Message
		max  uint64
		want string
	}{
		{"one proposal is left alone", []*raftpb.Message{msg(raftpb.MsgProp, 1, "a")}, 100, "MsgProp>1:a "},
		{"merged in order around other messages",
			[]*raftpb.Message{msg(raftpb.MsgProp, 1, "a"), msg(raftpb.MsgAppResp, 1), msg(raftpb.MsgProp, 1, "b", "c"), msg(raftpb.MsgReadIndex, 1), msg(raftpb.MsgProp, 1, "d")},
			1000, "MsgProp>1:a:b:c:d MsgAppResp>1 MsgReadIndex>1 "},
		{"per destination",
			[]*raftpb.Message{msg(raftpb.MsgProp, 1, "a"), msg(raftpb.MsgProp, 2, "b"), msg(raftpb.MsgProp, 1, "c"), msg(raftpb.MsgProp, 2, "d")},
			1000, "MsgProp>1:a:c MsgProp>2:b:d "},
		{"size cap starts a new message",
			[]*raftpb.Message{msg(raftpb.MsgProp, 1, "aaaa"), msg(raftpb.MsgProp, 1, "bbbb"), msg(raftpb.MsgProp, 1, "cc"), msg(raftpb.MsgProp, 1, "dddddd")},
			2*entryOverhead + 8, "MsgProp>1:aaaa:bbbb MsgProp>1:cc:dddddd "},
		{"an entry above the cap travels alone",
			[]*raftpb.Message{msg(raftpb.MsgProp, 1, "a"), msg(raftpb.MsgProp, 1, "0123456789"), msg(raftpb.MsgProp, 1, "b")},
			entryOverhead + 8, "MsgProp>1:a MsgProp>1:0123456789 MsgProp>1:b "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			originals := describe(tc.in)
			in := append([]*raftpb.Message(nil), tc.in...)
			if got := describe(coalesceProposals(tc.in, tc.max)); got != tc.want {
				t.Fatalf("coalesced = %q, want %q", got, tc.want)
			}
			if got := describe(in); got != originals {
				t.Fatalf("the input messages were changed: %q, were %q", got, originals)
			}
		})
	}
}

// BenchmarkCoalesceProposals: 100 forwarded proposals of 300 bytes in one
// Ready (a follower under 100 clients).
func BenchmarkCoalesceProposals(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		ms := make([]*raftpb.Message, 100)
		for i := range ms {
			ms[i] = msg(raftpb.MsgProp, 1, string(make([]byte, 300)))
		}
		b.StartTimer()
		if out := coalesceProposals(ms, DefaultMaxSizePerMsg); len(out) != 1 {
			b.Fatalf("%d messages", len(out))
		}
	}
}

// TestCoalescedProposalsFitTheTransport: however small the proposals, a
// merged MsgProp encodes within what the transport must carry for
// MaxSizePerMsg.
func TestCoalescedProposalsFitTheTransport(t *testing.T) {
	for _, size := range []int{0, 30, 300, 100 << 10} {
		n := 2*DefaultMaxSizePerMsg/(size+entryOverhead) + 2
		ms := make([]*raftpb.Message, n)
		for i := range ms {
			ms[i] = msg(raftpb.MsgProp, 1, string(make([]byte, size)))
			ms[i].Entries[0].Type = raftpb.EntryNormal.Enum()
			ms[i].Entries[0].Term = proto.Uint64(1 << 40)
			ms[i].Entries[0].Index = proto.Uint64(1 << 40)
		}
		out := coalesceProposals(ms, DefaultMaxSizePerMsg)
		if len(out) < 2 {
			t.Fatalf("%d-byte proposals: %d messages, want the cap to split them", size, len(out))
		}
		for _, m := range out {
			if got, limit := proto.Size(m), RequiredMessageSize(DefaultMaxSizePerMsg); got > limit {
				t.Fatalf("%d-byte proposals: a merged MsgProp of %d entries encodes to %d bytes, above %d", size, len(m.Entries), got, limit)
			}
		}
	}
}

// app is a MsgApp from 9 to `to` in term 2 after (index, logTerm), carrying
// one entry of term 2 per datum and the given commit index.
func app(to, index, logTerm, commit uint64, data ...string) *raftpb.Message {
	m := msg(raftpb.MsgApp, to, data...)
	m.Term, m.Index, m.LogTerm, m.Commit = proto.Uint64(2), proto.Uint64(index), proto.Uint64(logTerm), proto.Uint64(commit)
	for i, e := range m.Entries {
		e.Index, e.Term = proto.Uint64(index+uint64(i)+1), proto.Uint64(2)
	}
	return m
}

func describeApps(ms []*raftpb.Message) string {
	s := ""
	for _, m := range ms {
		if m.GetType() != raftpb.MsgApp {
			s += fmt.Sprintf("%s>%d ", m.GetType(), m.GetTo())
			continue
		}
		s += fmt.Sprintf("App>%d@%d/%d", m.GetTo(), m.GetIndex(), m.GetLogTerm())
		for _, e := range m.Entries {
			s += fmt.Sprintf(":%s", e.Data)
		}
		s += fmt.Sprintf(",c%d ", m.GetCommit())
	}
	return s
}

// TestCoalesceAppends: the one-entry appends a leader emits per proposal
// merge per follower when each continues the last, keep their place
// relative to other messages to the same follower, and never merge across
// a gap, a term or a cap.
func TestCoalesceAppends(t *testing.T) {
	term3 := app(1, 12, 2, 10, "x")
	term3.Term = proto.Uint64(3)
	for _, tc := range []struct {
		name string
		in   []*raftpb.Message
		max  uint64
		want string
	}{
		{"one append is left alone", []*raftpb.Message{app(1, 10, 2, 9, "a")}, 1000, "App>1@10/2:a,c9 "},
		{"consecutive appends merge, the later commit wins",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), app(1, 11, 2, 10, "b"), app(1, 12, 2, 10, "c", "d")},
			1000, "App>1@10/2:a:b:c:d,c10 "},
		{"per follower, interleaved",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), app(2, 10, 2, 9, "a"), app(1, 11, 2, 9, "b"), app(2, 11, 2, 9, "b")},
			1000, "App>1@10/2:a:b,c9 App>2@10/2:a:b,c9 "},
		{"an empty append carries its commit into the batch",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), app(1, 11, 2, 11)},
			1000, "App>1@10/2:a,c11 "},
		{"a gap is not merged",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), app(1, 12, 2, 9, "c")},
			1000, "App>1@10/2:a,c9 App>1@12/2:c,c9 "},
		{"a different log term at the seam is not merged",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), app(1, 11, 1, 9, "b")},
			1000, "App>1@10/2:a,c9 App>1@11/1:b,c9 "},
		{"a different message term is not merged",
			[]*raftpb.Message{app(1, 11, 2, 9, "a"), term3},
			1000, "App>1@11/2:a,c9 App>1@12/2:x,c10 "},
		{"another message to the follower closes the batch",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), msg(raftpb.MsgHeartbeat, 1), app(1, 11, 2, 9, "b"), app(1, 12, 2, 9, "c")},
			1000, "App>1@10/2:a,c9 MsgHeartbeat>1 App>1@11/2:b:c,c9 "},
		{"a message to another follower does not",
			[]*raftpb.Message{app(1, 10, 2, 9, "a"), msg(raftpb.MsgHeartbeat, 2), app(1, 11, 2, 9, "b")},
			1000, "App>1@10/2:a:b,c9 MsgHeartbeat>2 "},
		{"size cap starts a new message",
			[]*raftpb.Message{app(1, 10, 2, 9, "aaaa"), app(1, 11, 2, 9, "bbbb"), app(1, 12, 2, 9, "cccc")},
			2*entryOverhead + 8, "App>1@10/2:aaaa:bbbb,c9 App>1@12/2:cccc,c9 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// raft keeps its messages' entry slices: the originals must
			// come out as they went in.
			ptrs := append([]*raftpb.Message(nil), tc.in...)
			clones := make([]*raftpb.Message, len(tc.in))
			for i, m := range tc.in {
				clones[i] = proto.Clone(m).(*raftpb.Message)
			}
			if got := describeApps(coalesceAppends(tc.in, tc.max)); got != tc.want {
				t.Fatalf("coalesced = %q, want %q", got, tc.want)
			}
			for i, m := range ptrs {
				if !proto.Equal(m, clones[i]) {
					t.Fatalf("input message %d was changed: %s, was %s", i, describeApps(ptrs[i:i+1]), describeApps(clones[i:i+1]))
				}
			}
		})
	}
}
