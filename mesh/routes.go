package mesh

import (
	"slices"
	"sync"
)

// routeTable is an immutable snapshot of routes, published through an
// atomic pointer so the send path never takes a lock. Broadcast trees are
// computed lazily per source and cached in the snapshot.
type routeTable struct {
	self PeerName
	// next maps a reachable destination to the neighbour to send through.
	next map[PeerName]PeerName
	hops map[PeerName]int
	uids map[PeerName]uint64
	// parent is each destination's predecessor on its path from us;
	// detour holds whole paths for destinations moved off a degraded link.
	parent map[PeerName]PeerName
	detour map[PeerName][]PeerName
	// relay is the plain shortest-path next hop where next was moved off
	// a degraded link: frames we relay for others follow it, so only the
	// originator steers by link quality and views that agree stay loop
	// free (two members each avoiding their own bad link to a third would
	// otherwise bounce frames between them).
	relay map[PeerName]PeerName
	// adj is the symmetric graph the routes were computed over, with each
	// neighbour list sorted.
	adj map[PeerName][]PeerName

	treeMu sync.Mutex
	trees  map[PeerName][]PeerName // source → our children in its tree
}

// path returns the peers a frame to dst passes, dst last (nil if
// unreachable).
func (t *routeTable) path(dst PeerName) []PeerName {
	if p, ok := t.detour[dst]; ok {
		return p
	}
	if _, ok := t.hops[dst]; !ok || dst == t.self {
		return nil
	}
	var rev []PeerName
	for at := dst; at != t.self; at = t.parent[at] {
		rev = append(rev, at)
		if len(rev) > len(t.hops) {
			return nil // cannot happen: parents form a tree
		}
	}
	slices.Reverse(rev)
	return rev
}

// relayHop returns the neighbour to forward a frame for dst that we did
// not originate through: the plain shortest path (see relay).
func (t *routeTable) relayHop(dst PeerName) (PeerName, bool) {
	if n, ok := t.relay[dst]; ok {
		return n, true
	}
	n, ok := t.next[dst]
	return n, ok
}

// nextHop returns the neighbour to send to dst through.
func (t *routeTable) nextHop(dst PeerName) (PeerName, bool) {
	n, ok := t.next[dst]
	return n, ok
}

// buildGraph returns the symmetric established graph. Our own edges come
// from our live connections (a link is usable as soon as our handshake
// completes, since the duplex handshake proves both directions); edges
// between two other peers need both records to claim them established,
// so half-open links are never used.
func buildGraph(self PeerName, records map[PeerName]*peerRecord, direct map[PeerName]uint64) map[PeerName][]PeerName {
	adj := map[PeerName][]PeerName{self: nil}
	for d := range direct {
		if d == self {
			continue
		}
		adj[self] = append(adj[self], d)
		adj[d] = append(adj[d], self)
	}
	for name, r := range records {
		if name == self {
			continue
		}
		for _, c := range r.Conns {
			if !c.Established || c.Peer == self || c.Peer <= name {
				continue // self edges come from direct; each other pair once
			}
			o, ok := records[c.Peer]
			if !ok || !o.hasEstablished(name) {
				continue
			}
			adj[name] = append(adj[name], c.Peer)
			adj[c.Peer] = append(adj[c.Peer], name)
		}
	}
	for n := range adj {
		slices.Sort(adj[n])
	}
	return adj
}

// computeRoutes runs a breadth-first search from self. Each level is
// visited in name order and neighbours in name order, so every peer with
// the same view computes the same paths.
//
// direct maps each neighbour with an established connection to its UID.
func computeRoutes(self PeerName, records map[PeerName]*peerRecord, direct map[PeerName]uint64) *routeTable {
	adj := buildGraph(self, records, direct)
	t := &routeTable{
		self:   self,
		next:   map[PeerName]PeerName{},
		hops:   map[PeerName]int{self: 0},
		parent: map[PeerName]PeerName{},
		uids:   map[PeerName]uint64{},
		adj:    adj,
		trees:  map[PeerName][]PeerName{},
	}
	for n, r := range records {
		t.uids[n] = r.UID
	}
	for n, uid := range direct {
		t.uids[n] = uid // the live handshake is fresher than gossip
	}
	level := []PeerName{self}
	for depth := 1; len(level) > 0; depth++ {
		var nextLevel []PeerName
		for _, u := range level {
			for _, v := range adj[u] {
				if _, seen := t.hops[v]; seen {
					continue
				}
				t.hops[v] = depth
				t.parent[v] = u
				if u == self {
					t.next[v] = v
				} else {
					t.next[v] = t.next[u]
				}
				nextLevel = append(nextLevel, v)
			}
		}
		slices.Sort(nextLevel)
		level = nextLevel
	}
	return t
}

// computeRoutesAvoiding is computeRoutes preferring healthy paths over our
// degraded direct links (quality.go): a destination whose shortest path
// starts on a degraded link takes the shortest path that avoids our
// degraded links instead if it is at most one hop longer. A degraded link
// thus costs like three hops: a healthy two-hop path beats a lossy direct
// link, a three-hop detour does not (ties keep the direct link). Broadcast
// trees stay on the shared view (t.adj), so every peer still agrees on them.
func computeRoutesAvoiding(self PeerName, records map[PeerName]*peerRecord, direct map[PeerName]uint64, degraded map[PeerName]bool) *routeTable {
	t := computeRoutes(self, records, direct)
	if len(degraded) == 0 {
		return t
	}
	healthy := make(map[PeerName]uint64, len(direct))
	for n, uid := range direct {
		if !degraded[n] {
			healthy[n] = uid
		}
	}
	// Our own edges come only from direct (buildGraph), so leaving the
	// degraded links out of it is the graph without them.
	alt := computeRoutes(self, records, healthy)
	for d, hop := range t.next {
		if !degraded[hop] {
			continue
		}
		if h, ok := alt.hops[d]; ok && h <= t.hops[d]+1 {
			if t.relay == nil {
				t.relay = map[PeerName]PeerName{}
			}
			t.relay[d] = hop
			t.next[d], t.hops[d] = alt.next[d], h
			if t.detour == nil {
				t.detour = map[PeerName][]PeerName{}
			}
			t.detour[d] = alt.path(d)
		}
	}
	return t
}

// broadcastChildren returns the neighbours we forward a broadcast from src
// to: those whose parent is us in src's breadth-first tree. When every
// peer has the same view each peer receives each broadcast exactly once;
// while views differ, the (src, seq) dedup window and the TTL bound the
// damage.
func (t *routeTable) broadcastChildren(src PeerName) []PeerName {
	t.treeMu.Lock()
	defer t.treeMu.Unlock()
	if c, ok := t.trees[src]; ok {
		return c
	}
	children := bfsChildren(t.adj, src, t.self)
	t.trees[src] = children
	return children
}

// bfsChildren returns the children of node in the BFS tree rooted at src.
func bfsChildren(adj map[PeerName][]PeerName, src, node PeerName) []PeerName {
	if _, ok := adj[src]; !ok {
		return nil
	}
	parent := map[PeerName]PeerName{src: ""}
	level := []PeerName{src}
	for len(level) > 0 {
		var nextLevel []PeerName
		for _, u := range level {
			for _, v := range adj[u] {
				if _, seen := parent[v]; seen {
					continue
				}
				parent[v] = u
				nextLevel = append(nextLevel, v)
			}
		}
		slices.Sort(nextLevel)
		level = nextLevel
	}
	var children []PeerName
	for _, v := range adj[node] {
		if p, ok := parent[v]; ok && p == node && v != src {
			children = append(children, v)
		}
	}
	return children
}

// routeEvents lists what changed between two tables, in name order. A
// path that changed beyond the next hop counts: a relay on the old path
// may have lost what we sent through it (a link of its own went silent),
// and our next hop alone would not say so. hopMoved says that some event
// is more than that: a peer's reachability, next hop or UID changed.
func routeEvents(old, cur *routeTable) (evs []RouteEvent, hopMoved bool) {
	names := map[PeerName]bool{}
	if old != nil {
		for n := range old.next {
			names[n] = true
		}
	}
	for n := range cur.next {
		names[n] = true
	}
	sorted := make([]PeerName, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	for _, n := range sorted {
		var oldHop PeerName
		var oldOK bool
		var oldUID uint64
		if old != nil {
			oldHop, oldOK = old.next[n]
			oldUID = old.uids[n]
		}
		newHop, newOK := cur.next[n]
		newUID := cur.uids[n]
		sameHop := oldOK == newOK && oldHop == newHop && (!newOK || oldUID == newUID)
		if sameHop && (!newOK || slices.Equal(old.path(n), cur.path(n))) {
			continue
		}
		hopMoved = hopMoved || !sameHop
		ev := RouteEvent{Peer: n, Reachable: newOK, NextHop: newHop, UID: newUID}
		if !newOK {
			ev.UID = oldUID
		}
		evs = append(evs, ev)
	}
	return evs, hopMoved
}
