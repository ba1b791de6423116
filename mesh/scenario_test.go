package mesh

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// Scenario tests for the pure protocol logic: topology merge/GC and
// routing. Each file under testdata/topology and testdata/routes is one
// readable scenario; run with -rewrite to regenerate expected output after
// a deliberate change, and review the diff.

var scenarioEpoch = time.Unix(1_700_000_000, 0)

// parseRecordLine parses "name uid=1 v=100 nick=x addrs=h:1,h:2 conns=b,c~"
// where a trailing ~ marks a connection that is not established.
func parseRecordLine(t *testing.T, line string) *peerRecord {
	t.Helper()
	fields := strings.Fields(line)
	if len(fields) == 0 {
		t.Fatalf("empty record line")
	}
	r := &peerRecord{Name: PeerName(fields[0]), UID: 1, Version: 1}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("bad field %q", f)
		}
		switch k {
		case "uid":
			r.UID = mustUint(t, v)
		case "v":
			r.Version = mustUint(t, v)
		case "nick":
			r.NickName = v
		case "addrs":
			r.Addrs = strings.Split(v, ",")
		case "conns":
			for _, c := range strings.Split(v, ",") {
				if c == "" {
					continue
				}
				est := !strings.HasSuffix(c, "~")
				r.Conns = append(r.Conns, connRecord{Peer: PeerName(strings.TrimSuffix(c, "~")), Established: est})
			}
			slices.SortFunc(r.Conns, func(a, b connRecord) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
		default:
			t.Fatalf("unknown field %q", k)
		}
	}
	return r
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func parseRecords(t *testing.T, input string) []*peerRecord {
	var recs []*peerRecord
	for _, line := range strings.Split(input, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			recs = append(recs, parseRecordLine(t, line))
		}
	}
	return recs
}

func argString(d *datadriven.TestData, key, def string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			if len(a.Vals) == 0 {
				return ""
			}
			return strings.Join(a.Vals, ",")
		}
	}
	return def
}

func argInt(t *testing.T, d *datadriven.TestData, key string, def int) int {
	s := argString(d, key, "")
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func argNames(d *datadriven.TestData, key string) []PeerName {
	s := argString(d, key, "")
	var out []PeerName
	for _, p := range strings.Split(s, ",") {
		if p != "" {
			out = append(out, PeerName(p))
		}
	}
	return out
}

func renderRecord(r *peerRecord) string {
	var conns []string
	for _, c := range r.Conns {
		s := string(c.Peer)
		if !c.Established {
			s += "~"
		}
		conns = append(conns, s)
	}
	s := fmt.Sprintf("%s uid=%d v=%d", r.Name, r.UID, r.Version)
	if r.NickName != "" {
		s += " nick=" + r.NickName
	}
	if len(r.Addrs) > 0 {
		s += " addrs=" + strings.Join(r.Addrs, ",")
	}
	return s + " conns=" + strings.Join(conns, ",")
}

func renderTopology(tp *topology) string {
	var b strings.Builder
	for _, n := range tp.sortedNames() {
		b.WriteString(renderRecord(tp.records[n]))
		b.WriteString("\n")
	}
	var ts []string
	for n, s := range tp.tombstones {
		ts = append(ts, fmt.Sprintf("tombstone %s uid=%d v=%d", n, s.UID, s.Version))
	}
	slices.Sort(ts)
	for _, s := range ts {
		b.WriteString(s + "\n")
	}
	if tp.collision != nil {
		fmt.Fprintf(&b, "COLLISION uid=%d v=%d\n", tp.collision.UID, tp.collision.Version)
	}
	return b.String()
}

func TestTopologyScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/topology", func(t *testing.T, path string) {
		var tp *topology
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			now := scenarioEpoch.Add(time.Duration(argInt(t, d, "now", 0)) * time.Second)
			switch d.Cmd {
			case "init":
				self := parseRecordLine(t, d.Input)
				tp = newTopology(self, argInt(t, d, "max-peers", 1024), argInt(t, d, "conn-limit", 64))
				return renderTopology(tp)
			case "merge":
				res := tp.merge(parseRecords(t, d.Input), now)
				var b strings.Builder
				var improved []string
				for _, r := range res.improved {
					improved = append(improved, string(r.Name))
				}
				fmt.Fprintf(&b, "improved: %s\n", strings.Join(improved, ","))
				if len(res.restarted) > 0 {
					fmt.Fprintf(&b, "restarted: %v\n", res.restarted)
				}
				if res.rejected > 0 {
					fmt.Fprintf(&b, "rejected: %d\n", res.rejected)
				}
				if res.selfChanged {
					b.WriteString("self version bumped\n")
				}
				if res.collision {
					b.WriteString("collision detected\n")
				}
				b.WriteString(renderTopology(tp))
				return b.String()
			case "set-conns":
				var conns []connRecord
				for _, p := range argNames(d, "conns") {
					conns = append(conns, connRecord{Peer: p, Established: true})
				}
				changed := tp.setSelfConns(conns)
				return fmt.Sprintf("changed: %v\n%s", changed, renderTopology(tp))
			case "gc":
				reachable := argNames(d, "reachable")
				pinned := argNames(d, "pinned")
				removed := tp.gc(now, func(p PeerName) bool { return slices.Contains(reachable, p) },
					func(p PeerName) bool { return slices.Contains(pinned, p) },
					time.Duration(argInt(t, d, "grace", 60))*time.Second, time.Duration(argInt(t, d, "ttl", 600))*time.Second)
				return fmt.Sprintf("removed: %v\n%s", removed, renderTopology(tp))
			case "merge-orders":
				// Merge the records into fresh replicas in every rotation and
				// in reverse; all must agree (commutativity), and merging
				// everything twice must change nothing (idempotence).
				recs := parseRecords(t, d.Input)
				self := parseRecordLine(t, argString(d, "self", "zz uid=1 v=1"))
				var results []string
				for rot := 0; rot < len(recs); rot++ {
					for _, rev := range []bool{false, true} {
						order := append(slices.Clone(recs[rot:]), recs[:rot]...)
						if rev {
							slices.Reverse(order)
						}
						rep := newTopology(self.clone(), 1024, 64)
						for _, r := range order {
							rep.merge([]*peerRecord{r}, now)
						}
						before := renderTopology(rep)
						rep.merge(order, now)
						if renderTopology(rep) != before {
							return "NOT IDEMPOTENT\n" + before + "---\n" + renderTopology(rep)
						}
						results = append(results, before)
					}
				}
				for _, r := range results[1:] {
					if r != results[0] {
						return "ORDERS DISAGREE\n" + results[0] + "---\n" + r
					}
				}
				return fmt.Sprintf("all %d orders agree\n%s", len(results), results[0])
			case "digest":
				// A neighbour's digest: which of our records we push back,
				// and whether it has something newer we should ask for.
				theirs := map[PeerName]digestEntry{}
				for _, r := range parseRecords(t, d.Input) {
					theirs[r.Name] = digestEntry{UID: r.UID, Version: r.Version}
				}
				// Round-trip the digest through its wire encoding first.
				msgs := (&topologyDigest{entries: theirs}).Encode()
				decoded := map[PeerName]digestEntry{}
				for _, m := range msgs {
					part, err := decodeDigest(m[1:])
					if err != nil {
						return "error: " + err.Error() + "\n"
					}
					for k, v := range part {
						decoded[k] = v
					}
				}
				push, lacking := tp.diffDigest(decoded)
				var names []string
				for _, r := range push {
					names = append(names, string(r.Name))
				}
				return fmt.Sprintf("push: %s\nask for more: %v\n", strings.Join(names, ","), lacking)
			case "roundtrip":
				recs := parseRecords(t, d.Input)
				got, err := decodeRecords(encodeRecords(recs))
				if err != nil {
					return "error: " + err.Error() + "\n"
				}
				var b strings.Builder
				for _, r := range got {
					b.WriteString(renderRecord(r) + "\n")
				}
				return b.String()
			default:
				t.Fatalf("unknown command %q", d.Cmd)
				return ""
			}
		})
	})
}

func TestRouteScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/routes", func(t *testing.T, path string) {
		records := map[PeerName]*peerRecord{}
		last := map[PeerName]*routeTable{} // the previous routes at each self
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "records":
				records = map[PeerName]*peerRecord{}
				for _, r := range parseRecords(t, d.Input) {
					records[r.Name] = r
				}
				return ""
			case "routes":
				// Routes as computed at self, whose direct links are its live
				// connections (by default, the ones its record lists).
				self := PeerName(argString(d, "self", ""))
				direct := map[PeerName]uint64{}
				if s := argString(d, "direct", "-"); s != "-" {
					for _, p := range argNames(d, "direct") {
						direct[p] = 1
					}
				} else if rec := records[self]; rec != nil {
					for _, c := range rec.Conns {
						if c.Established {
							direct[c.Peer] = 1
						}
					}
				}
				degraded := map[PeerName]bool{}
				for _, p := range argNames(d, "degraded") {
					degraded[p] = true
				}
				rt := computeRoutesAvoiding(self, records, direct, degraded)
				prev := last[self]
				last[self] = rt
				if argString(d, "events", "-") != "-" {
					// What SubscribeRoutes reports since the previous
					// routes at self.
					var b strings.Builder
					evs, _ := routeEvents(prev, rt)
					for _, ev := range evs {
						fmt.Fprintf(&b, "event %s reachable=%v next=%s\n", ev.Peer, ev.Reachable, ev.NextHop)
					}
					if b.Len() == 0 {
						return "no events\n"
					}
					return b.String()
				}
				var dests []PeerName
				for p := range rt.next {
					dests = append(dests, p)
				}
				slices.Sort(dests)
				var b strings.Builder
				for _, p := range dests {
					fmt.Fprintf(&b, "%s -> %s via %s (%d hops)", self, p, rt.next[p], rt.hops[p])
					if argString(d, "paths", "-") != "-" {
						fmt.Fprintf(&b, " path %v", rt.path(p))
					}
					if argString(d, "relay", "-") != "-" {
						relay, _ := rt.relayHop(p)
						fmt.Fprintf(&b, ", relayed via %s", relay)
					}
					b.WriteString("\n")
				}
				var unreachable []string
				for p := range records {
					if _, ok := rt.hops[p]; !ok {
						unreachable = append(unreachable, string(p))
					}
				}
				slices.Sort(unreachable)
				if len(unreachable) > 0 {
					fmt.Fprintf(&b, "unreachable: %s\n", strings.Join(unreachable, ","))
				}
				return b.String()
			case "broadcast":
				// Simulate a broadcast from src with every peer forwarding by
				// its own view, and count deliveries per peer.
				src := PeerName(argString(d, "src", ""))
				tables := map[PeerName]*routeTable{}
				for name, rec := range records {
					direct := map[PeerName]uint64{}
					for _, c := range rec.Conns {
						if c.Established {
							direct[c.Peer] = 1
						}
					}
					tables[name] = computeRoutes(name, records, direct)
				}
				received := map[PeerName]int{}
				var transmissions int
				queue := []PeerName{src}
				for len(queue) > 0 {
					at := queue[0]
					queue = queue[1:]
					for _, child := range tables[at].broadcastChildren(src) {
						transmissions++
						received[child]++
						if received[child] == 1 { // dedup: forward only once
							queue = append(queue, child)
						}
					}
				}
				var names []PeerName
				for n := range records {
					names = append(names, n)
				}
				slices.Sort(names)
				var b strings.Builder
				for _, n := range names {
					if n != src {
						fmt.Fprintf(&b, "%s received %d\n", n, received[n])
					}
				}
				fmt.Fprintf(&b, "transmissions: %d\n", transmissions)
				return b.String()
			default:
				t.Fatalf("unknown command %q", d.Cmd)
				return ""
			}
		})
	})
}

// TestQualityScenarios drives one link's quality state machine (quality.go)
// through a sequence of pings: each "pings" command sends n pings one
// heartbeat apart, the given share of them answered in time, and prints the
// loss estimate and whether the link is degraded after each command.
// "reconnect" replaces the connection by a new one that inherits its
// quality, after it failed (failed=true: declared dead, reset) or not.
func TestQualityScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/quality", func(t *testing.T, path string) {
		const hb = 150 * time.Millisecond
		var q linkQuality
		now := time.Unix(1000, 0)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "pings":
				n := argInt(t, d, "n", 1)
				answered := argInt(t, d, "answered-pct", 100)
				var b strings.Builder
				for i := range n {
					if q.pinged(now.UnixNano(), hb, false) {
						fmt.Fprintf(&b, "ping %d: degraded=%v\n", i+1, q.isDegraded())
					}
					// Spread the answered share evenly over the pings.
					k := int(q.pings) - 1
					if (k+1)*answered/100 > k*answered/100 {
						q.pong(now.UnixNano(), time.Millisecond)
					}
					now = now.Add(hb)
				}
				st := q.snapshot()
				fmt.Fprintf(&b, "loss %.2f degraded=%v\n", st.loss, st.degraded)
				return b.String()
			case "wait":
				now = now.Add(time.Duration(argInt(t, d, "ms", 0)) * time.Millisecond)
				return ""
			case "reconnect":
				if d.HasArg("failed") {
					q.failed(now)
				}
				prev := q.snapshot()
				q = linkQuality{}
				q.inherit(prev)
				st := q.snapshot()
				return fmt.Sprintf("loss %.2f degraded=%v\n", st.loss, st.degraded)
			default:
				t.Fatalf("unknown command %q", d.Cmd)
				return ""
			}
		})
	})
}
