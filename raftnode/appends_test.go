package raftnode

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

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
