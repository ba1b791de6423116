package meshview

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

// Link states.
const (
	// LinkUp is a link both ends report established.
	LinkUp = "up"
	// LinkConnecting is a link only one end reports, or one still in its
	// handshake.
	LinkConnecting = "connecting"
	// LinkDown is a pair of members with no connection: members connect
	// to each other directly whenever the network lets them, so a missing
	// link means the network between them is cut (or one of them is down).
	LinkDown = "down"
)

// Graph is the cluster as one member sees it.
type Graph struct {
	// Viewer is the name of the member that built the graph.
	Viewer string `json:"viewer"`
	// Leader is the name of the Raft leader the viewer knows, "" when it
	// knows none.
	Leader  string    `json:"leader"`
	Members []Member  `json:"members"`
	Links   []Link    `json:"links"`
	Routes  []Route   `json:"routes"`
	Time    time.Time `json:"time"`
}

// Member is one node of the graph: a member of the committed membership,
// or a mesh peer that is not (yet) one.
type Member struct {
	Name string `json:"name"`
	// Peer is the member's mesh name (host:port of its peer URL).
	Peer       string   `json:"peer"`
	ClientURLs []string `json:"client_urls,omitempty"`
	Leader     bool     `json:"leader"`
	// InMesh reports whether the viewer can reach the member over the mesh.
	InMesh bool `json:"in_mesh"`
	// NotMember marks a mesh peer outside the committed membership.
	NotMember bool `json:"not_member,omitempty"`
}

// Link is one pair of members, A < B by name.
type Link struct {
	A     string `json:"a"`
	B     string `json:"b"`
	State string `json:"state"` // LinkUp, LinkConnecting or LinkDown
	// RTT is the link's measured round-trip time ("" when no member that
	// answered is an end of the link).
	RTT string `json:"rtt,omitempty"`
}

// Route is the path Raft messages take from the leader to one member.
type Route struct {
	To string `json:"to"`
	// Path lists the members from the leader to To, both included; empty
	// when the leader cannot reach To.
	Path []string `json:"path"`
}

// Hops is the number of links on the route (0 when unreachable).
func (r Route) Hops() int { return max(len(r.Path)-1, 0) }

// Via returns the members the route is relayed through.
func (r Route) Via() []string {
	if len(r.Path) <= 2 {
		return nil
	}
	return r.Path[1 : len(r.Path)-1]
}

// String reads like "m0→m2 via m1", "m0→m1 direct" or "m0→m2 unreachable";
// the page uses it as the route's data-route attribute.
func (r Route) String(leader string) string {
	switch {
	case len(r.Path) == 0:
		return leader + "→" + r.To + " unreachable"
	case len(r.Path) == 2:
		return leader + "→" + r.To + " direct"
	default:
		return leader + "→" + r.To + " via " + strings.Join(r.Via(), ",")
	}
}

// MemberInfo is what Build needs of one member of the membership.
type MemberInfo struct {
	Name       string
	PeerURLs   []string
	ClientURLs []string
}

// Input is everything Build combines.
type Input struct {
	// Self is the viewer's mesh status: its connections and the whole
	// gossiped topology.
	Self mesh.Status
	// SelfName is the viewer's member name.
	SelfName string
	// LeaderName is the leader's member name ("" when none).
	LeaderName string
	Members    []MemberInfo
	// Others are mesh statuses fetched from other members; they only add
	// the round-trip times of links the viewer is not on.
	Others []mesh.Status
	Now    time.Time
}

// Build assembles the graph.
func Build(in Input) Graph {
	g := Graph{Viewer: in.SelfName, Leader: in.LeaderName, Time: in.Now, Links: []Link{}, Routes: []Route{}}
	var nameOf map[mesh.PeerName]string
	g.Members, nameOf = buildMembers(in)
	var up map[mesh.PeerName][]mesh.PeerName
	g.Links, up = buildLinks(in, g.Members)
	for _, m := range g.Members {
		if m.Leader {
			g.Routes = buildRoutes(g.Members, nameOf, up, mesh.PeerName(m.Peer))
		}
	}
	return g
}

// buildMembers lists the membership, matched to mesh peers by peer URL host
// (a member's mesh name is host:port of one of its peer URLs), then the
// mesh peers outside the membership, named by their nickname. nameOf maps
// each mesh name to the node's name.
func buildMembers(in Input) (members []Member, nameOf map[mesh.PeerName]string) {
	records := map[mesh.PeerName]mesh.PeerStatus{}
	for _, p := range in.Self.Peers {
		records[p.Name] = p
	}
	members = []Member{}
	nameOf = map[mesh.PeerName]string{}
	for _, mi := range in.Members {
		m := Member{Name: mi.Name, ClientURLs: slices.Clone(mi.ClientURLs), Leader: mi.Name != "" && mi.Name == in.LeaderName}
		for _, pu := range mi.PeerURLs {
			u, err := url.Parse(pu)
			if err != nil || u.Host == "" {
				continue
			}
			if m.Peer == "" {
				m.Peer = u.Host
			}
			if _, ok := records[mesh.PeerName(u.Host)]; ok {
				m.Peer = u.Host
				break
			}
		}
		if m.Name == "" { // added but not started yet: etcd lists it unnamed
			m.Name = m.Peer
		}
		nameOf[mesh.PeerName(m.Peer)] = m.Name
		members = append(members, m)
	}
	for _, p := range in.Self.Peers {
		if _, ok := nameOf[p.Name]; ok {
			continue
		}
		name := p.NickName
		if name == "" || slices.ContainsFunc(members, func(m Member) bool { return m.Name == name }) {
			name = string(p.Name)
		}
		nameOf[p.Name] = name
		members = append(members, Member{Name: name, Peer: string(p.Name), NotMember: true})
	}
	for i := range members {
		pn := mesh.PeerName(members[i].Peer)
		members[i].InMesh = pn == in.Self.Name || records[pn].Reachable
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return members, nameOf
}

// claim is what one end says about a link.
type claim int

const (
	noClaim claim = iota
	claimPending
	claimEstablished
)

// buildLinks gives every pair of members the state both ends claim: the
// gossiped records for other members, the live connections for the viewer
// (as the mesh routes: its own edges come from its connections). up is the
// graph of links that are up.
func buildLinks(in Input, members []Member) (links []Link, up map[mesh.PeerName][]mesh.PeerName) {
	claims := map[[2]mesh.PeerName]claim{} // (from, to)
	for _, p := range in.Self.Peers {
		if p.Name == in.Self.Name {
			continue
		}
		for _, c := range p.Connections {
			to, pending := strings.CutSuffix(c, " (pending)")
			claims[[2]mesh.PeerName{p.Name, mesh.PeerName(to)}] = claimEstablished
			if pending {
				claims[[2]mesh.PeerName{p.Name, mesh.PeerName(to)}] = claimPending
			}
		}
	}
	for _, c := range in.Self.Connections {
		if c.Peer == "" {
			continue // still in its handshake: the peer is not known yet
		}
		k := [2]mesh.PeerName{in.Self.Name, c.Peer}
		if c.State == "established" {
			claims[k] = claimEstablished
		} else {
			claims[k] = max(claims[k], claimPending)
		}
	}
	rtts := map[[2]mesh.PeerName]string{}
	for _, st := range append([]mesh.Status{in.Self}, in.Others...) {
		for _, c := range st.Connections {
			k := pairKey(st.Name, c.Peer)
			if c.State == "established" && c.RTT != "" && rtts[k] == "" {
				rtts[k] = roundRTT(c.RTT)
			}
		}
	}
	links = []Link{}
	up = map[mesh.PeerName][]mesh.PeerName{}
	for i, a := range members {
		for _, b := range members[i+1:] {
			pa, pb := mesh.PeerName(a.Peer), mesh.PeerName(b.Peer)
			ab, ba := claims[[2]mesh.PeerName{pa, pb}], claims[[2]mesh.PeerName{pb, pa}]
			l := Link{A: a.Name, B: b.Name, State: LinkDown}
			switch {
			case ab == claimEstablished && ba == claimEstablished:
				l.State = LinkUp
				l.RTT = rtts[pairKey(pa, pb)]
				up[pa] = append(up[pa], pb)
				up[pb] = append(up[pb], pa)
			case ab != noClaim || ba != noClaim:
				l.State = LinkConnecting
			}
			links = append(links, l)
		}
	}
	return links, up
}

// buildRoutes gives each member the path from the leader over the links
// that are up, as the mesh computes it.
func buildRoutes(members []Member, nameOf map[mesh.PeerName]string, up map[mesh.PeerName][]mesh.PeerName, leader mesh.PeerName) []Route {
	routes := []Route{}
	parent := bfsParents(up, leader)
	for _, m := range members {
		pn := mesh.PeerName(m.Peer)
		if pn == leader || m.NotMember {
			continue
		}
		r := Route{To: m.Name, Path: []string{}}
		if _, ok := parent[pn]; ok {
			for n := pn; n != ""; n = parent[n] {
				r.Path = append([]string{nameOf[n]}, r.Path...)
			}
		}
		routes = append(routes, r)
	}
	return routes
}

// bfsParents runs the mesh's breadth-first search from src: each level in
// name order, neighbours in name order; the first visitor is the parent.
// The source maps to "".
func bfsParents(adj map[mesh.PeerName][]mesh.PeerName, src mesh.PeerName) map[mesh.PeerName]mesh.PeerName {
	parent := map[mesh.PeerName]mesh.PeerName{src: ""}
	level := []mesh.PeerName{src}
	for len(level) > 0 {
		var next []mesh.PeerName
		for _, u := range level {
			nb := slices.Clone(adj[u])
			slices.Sort(nb)
			for _, v := range nb {
				if _, seen := parent[v]; seen {
					continue
				}
				parent[v] = u
				next = append(next, v)
			}
		}
		slices.Sort(next)
		level = next
	}
	return parent
}

func pairKey(a, b mesh.PeerName) [2]mesh.PeerName {
	if b < a {
		a, b = b, a
	}
	return [2]mesh.PeerName{a, b}
}

// roundRTT shortens the mesh's nanosecond durations for display.
func roundRTT(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	switch {
	case d >= 10*time.Millisecond:
		d = d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		d = d.Round(10 * time.Microsecond)
	default:
		d = d.Round(time.Microsecond)
	}
	return d.String()
}
