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
