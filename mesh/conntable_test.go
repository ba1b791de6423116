package mesh

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// Scenario tests for the connection table rules: tie-break, restart by
// UID, the winner dying, standby promotion and retirement, and the
// handshake limits. Each file under testdata/conntable is one scenario;
// run with -rewrite to regenerate expected output after a deliberate
// change, and review the diff.
//
// Commands (connections and handshakes are named by the scenario):
//
//	init self=b [conn-limit=64] [max-pending=16]
//	reserve hs=h1 addr=a:1          a handshake starts (ok or refused)
//	fail hs=h1                      that handshake fails
//	add id=c1 peer=a uid=10 dir=out|in [hs=h1] [addr=<id>] [at=0]
//	                                the handshake succeeds (at: seconds)
//	frame id=c1                     c1 receives its first frame
//	closing id=c1                   c1 starts closing (goodbye in flight)
//	close id=c1                     c1 is dead
//	expire now=10 max-age=5         standbys older than max-age at now
//	stop                            the router stops
func TestConnTableScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/conntable", func(t *testing.T, path string) {
		var s *connTableScenario
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "init" {
				s = &connTableScenario{
					table: newConnTable(PeerName(argString(d, "self", "")), argInt(t, d, "conn-limit", 64), argInt(t, d, "max-pending", 16)),
					conns: map[string]*conn{}, labels: map[*conn]string{}, handshakes: map[string]net.Conn{},
				}
				return s.render()
			}
			if s == nil {
				t.Fatalf("%s: run init first", d.Pos)
			}
			return s.run(t, d) + s.render()
		})
	})
}

// scenarioNetConn stands in for a handshake's socket: only its identity
// matters to the table.
type scenarioNetConn struct {
	net.Conn
	label string
}

type connTableScenario struct {
	table      *connTable
	conns      map[string]*conn
	labels     map[*conn]string
	handshakes map[string]net.Conn
}

func (s *connTableScenario) conn(t *testing.T, d *datadriven.TestData) *conn {
	t.Helper()
	id := argString(d, "id", "")
	c, ok := s.conns[id]
	if !ok {
		t.Fatalf("%s: unknown connection %q", d.Pos, id)
	}
	return c
}

func (s *connTableScenario) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "reserve":
		hs := argString(d, "hs", "")
		nc := &scenarioNetConn{label: hs}
		if !s.table.reserve(nc, argString(d, "addr", hs)) {
			return "refused\n"
		}
		s.handshakes[hs] = nc
		return "ok\n"
	case "fail":
		hs := argString(d, "hs", "")
		s.table.release(s.handshakes[hs])
		delete(s.handshakes, hs)
		return ""
	case "add":
		id := argString(d, "id", "")
		peer := argString(d, "peer", "")
		c := &conn{
			remote:    PeerName(peer),
			remoteUID: uint64(argInt(t, d, "uid", 1)),
			outbound:  argString(d, "dir", "") == "out",
			addr:      argString(d, "addr", id),
			since:     scenarioEpoch.Add(time.Duration(argInt(t, d, "at", 0)) * time.Second),
		}
		if hs := argString(d, "hs", ""); hs != "" {
			c.nc = s.handshakes[hs]
			delete(s.handshakes, hs)
		}
		s.conns[id], s.labels[c] = c, id
		out, err := s.table.add(c)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		var b strings.Builder
		if out.inUse {
			b.WriteString("in use\n")
		} else {
			b.WriteString("lost the tie-break\n")
		}
		for _, r := range out.retire {
			fmt.Fprintf(&b, "retire %s (%s)\n", s.labels[r.c], r.reason)
		}
		return b.String()
	case "frame":
		c := s.conn(t, d)
		if c.framesIn.Add(1) != 1 {
			return "not the first frame\n"
		}
		if sb := s.table.firstFrame(c); sb != nil {
			return fmt.Sprintf("retire %s (duplicate connection)\n", s.labels[sb])
		}
		return "nothing to retire\n"
	case "closing":
		s.conn(t, d).closing.Store(true)
		return ""
	case "close":
		c := s.conn(t, d)
		c.closing.Store(true)
		out := s.table.remove(c)
		var b strings.Builder
		switch {
		case out.lost:
			fmt.Fprintf(&b, "%s lost its link\n", c.remote)
		case out.changed:
			fmt.Fprintf(&b, "%s kept its link: standby promoted\n", c.remote)
		default:
			b.WriteString("was not in use\n")
		}
		if out.addrInUse {
			fmt.Fprintf(&b, "address %s still in use\n", c.addr)
		}
		return b.String()
	case "expire":
		now := scenarioEpoch.Add(time.Duration(argInt(t, d, "now", 0)) * time.Second)
		var names []string
		for _, c := range s.table.expiredStandbys(now, time.Duration(argInt(t, d, "max-age", 0))*time.Second) {
			names = append(names, s.labels[c])
		}
		slices.Sort(names)
		return fmt.Sprintf("retire: %s\n", strings.Join(names, ","))
	case "stop":
		conns, pending := s.table.close()
		var names []string
		for _, c := range conns {
			names = append(names, s.labels[c])
		}
		for _, nc := range pending {
			names = append(names, nc.(*scenarioNetConn).label)
		}
		slices.Sort(names)
		return fmt.Sprintf("close: %s\n", strings.Join(names, ","))
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
		return ""
	}
}

// render lists the table: connections by peer, the one in use first, then
// the handshakes in progress. It also checks that the published copy
// matches the table.
func (s *connTableScenario) render() string {
	entries, pending := s.table.snapshot()
	slices.SortFunc(entries, func(a, b tableEntry) int {
		if c := strings.Compare(string(a.c.remote), string(b.c.remote)); c != 0 {
			return c
		}
		return strings.Compare(a.state, b.state)
	})
	var b strings.Builder
	published := s.table.current()
	inUse := 0
	for _, e := range entries {
		dir := "inbound"
		if e.c.outbound {
			dir = "outbound"
		}
		fmt.Fprintf(&b, "  %s: %s %s uid=%d %s\n", e.c.remote, e.state, s.labels[e.c], e.c.remoteUID, dir)
		if e.state == "established" {
			inUse++
			if published[e.c.remote] != e.c {
				fmt.Fprintf(&b, "  PUBLISHED TABLE DISAGREES for %s\n", e.c.remote)
			}
		}
	}
	if len(published) != inUse {
		fmt.Fprintf(&b, "  PUBLISHED TABLE HAS %d CONNECTIONS, NOT %d\n", len(published), inUse)
	}
	slices.Sort(pending)
	if len(pending) > 0 {
		fmt.Fprintf(&b, "  handshakes: %s\n", strings.Join(pending, ","))
	}
	if b.Len() == 0 {
		return "  (empty)\n"
	}
	return b.String()
}
