package meshview

import (
	"strings"
	"testing"
	"time"
)

func TestWriteTables(t *testing.T) {
	st, members := triangle()
	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members, Now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	var b strings.Builder
	if err := WriteTables(&b, g); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Leader: a (viewed from b at 2026-01-02T03:04:05Z)",
		"a       leader    10.0.0.1:2380  yes      http://10.0.0.1:2379",
		"c       follower  10.0.0.3:2380  yes      http://10.0.0.3:2379",
		"a <-> b  up     1.23ms",
		"a <-> c  down   -",
		"a -> b     1     direct",
		"a -> c     2     b",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

func TestWriteTablesWithoutLeader(t *testing.T) {
	st, members := triangle()
	var b strings.Builder
	if err := WriteTables(&b, Build(Input{Self: st, SelfName: "b", Members: members})); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.HasPrefix(out, "Leader: none") || strings.Contains(out, "RAFT PATH") {
		t.Errorf("output without a leader:\n%s", out)
	}
}
