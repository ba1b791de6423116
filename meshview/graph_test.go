package meshview

import (
	"slices"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

// triangle is three members a, b, c (peers 10.0.0.1-3:2380) with the a–c
// link cut: a and c both only list b. The status is b's view.
func triangle() (mesh.Status, []MemberInfo) {
	peer := func(name, nick string, reachable bool, conns ...string) mesh.PeerStatus {
		return mesh.PeerStatus{Name: mesh.PeerName(name), NickName: nick, Connections: conns, Reachable: reachable}
	}
	st := mesh.Status{
		Name: "10.0.0.2:2380",
		Peers: []mesh.PeerStatus{
			peer("10.0.0.1:2380", "a", true, "10.0.0.2:2380"),
			peer("10.0.0.2:2380", "b", true, "10.0.0.1:2380", "10.0.0.3:2380"),
			peer("10.0.0.3:2380", "c", true, "10.0.0.2:2380"),
		},
		Connections: []mesh.ConnectionStatus{
			{Peer: "10.0.0.1:2380", State: "established", RTT: "1.234567ms"},
			{Peer: "10.0.0.3:2380", State: "established", RTT: "15.6789ms"},
		},
	}
	members := []MemberInfo{
		{Name: "a", PeerURLs: []string{"http://10.0.0.1:2380"}, ClientURLs: []string{"http://10.0.0.1:2379"}},
		{Name: "b", PeerURLs: []string{"http://10.0.0.2:2380"}, ClientURLs: []string{"http://10.0.0.2:2379"}},
		{Name: "c", PeerURLs: []string{"http://10.0.0.3:2380"}, ClientURLs: []string{"http://10.0.0.3:2379"}},
	}
	return st, members
}

func linkState(g Graph, a, b string) Link {
	for _, l := range g.Links {
		if l.A == a && l.B == b {
			return l
		}
	}
	return Link{}
}

func TestBuildCutLinkIsDownAndRaftPathIsRelayed(t *testing.T) {
	st, members := triangle()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members, Now: now})

	if g.Viewer != "b" || g.Leader != "a" || !g.Time.Equal(now) {
		t.Fatalf("viewer/leader/time = %q/%q/%v", g.Viewer, g.Leader, g.Time)
	}
	var names []string
	for _, m := range g.Members {
		names = append(names, m.Name)
		if !m.InMesh || m.NotMember || m.Leader != (m.Name == "a") {
			t.Errorf("member %+v", m)
		}
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("members %v", names)
	}
	if l := linkState(g, "a", "b"); l.State != LinkUp || l.RTT != "1.23ms" {
		t.Errorf("a-b = %+v, want up with rtt 1.23ms", l)
	}
	if l := linkState(g, "b", "c"); l.State != LinkUp || l.RTT != "16ms" {
		t.Errorf("b-c = %+v, want up with rtt 16ms", l)
	}
	if l := linkState(g, "a", "c"); l.State != LinkDown || l.RTT != "" {
		t.Errorf("a-c = %+v, want down", l)
	}
	want := map[string]string{"b": "a→b direct", "c": "a→c via b"}
	if len(g.Routes) != 2 {
		t.Fatalf("routes %+v", g.Routes)
	}
	for _, r := range g.Routes {
		if got := r.String(g.Leader); got != want[r.To] {
			t.Errorf("route to %s = %q, want %q", r.To, got, want[r.To])
		}
	}
}

func TestBuildRTTFromOtherMembers(t *testing.T) {
	st, members := triangle()
	// The a–c link is back, seen only by a (the viewer b is not on it).
	st.Peers[0].Connections = append(st.Peers[0].Connections, "10.0.0.3:2380")
	st.Peers[2].Connections = append([]string{"10.0.0.1:2380"}, st.Peers[2].Connections...)
	other := mesh.Status{Name: "10.0.0.1:2380", Connections: []mesh.ConnectionStatus{{Peer: "10.0.0.3:2380", State: "established", RTT: "42µs"}}}

	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members})
	if l := linkState(g, "a", "c"); l.State != LinkUp || l.RTT != "" {
		t.Errorf("without a's status a-c = %+v, want up without rtt", l)
	}
	g = Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members, Others: []mesh.Status{other}})
	if l := linkState(g, "a", "c"); l.State != LinkUp || l.RTT != "42µs" {
		t.Errorf("a-c = %+v, want up with rtt 42µs", l)
	}
	for _, r := range g.Routes {
		if r.Hops() != 1 {
			t.Errorf("route %v: want direct once every link is up", r.String(g.Leader))
		}
	}
}

func TestBuildPendingLinkIsConnecting(t *testing.T) {
	st, members := triangle()
	st.Peers[0].Connections = append(st.Peers[0].Connections, "10.0.0.3:2380 (pending)")
	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members})
	if l := linkState(g, "a", "c"); l.State != LinkConnecting {
		t.Errorf("a-c = %+v, want connecting", l)
	}
	// A connecting link carries no Raft traffic.
	for _, r := range g.Routes {
		if r.To == "c" && r.String("a") != "a→c via b" {
			t.Errorf("route to c = %q", r.String("a"))
		}
	}
}

func TestBuildWithoutLeaderHasNoRoutes(t *testing.T) {
	st, members := triangle()
	g := Build(Input{Self: st, SelfName: "b", Members: members})
	if g.Leader != "" || len(g.Routes) != 0 {
		t.Fatalf("leader %q routes %+v", g.Leader, g.Routes)
	}
	for _, m := range g.Members {
		if m.Leader {
			t.Errorf("%s marked leader", m.Name)
		}
	}
}

func TestBuildUnreachableMemberAndMeshPeerOutsideMembership(t *testing.T) {
	st, members := triangle()
	// c is down: nobody links to it and b cannot reach it; d is a mesh
	// peer that has not joined the membership.
	st.Peers[0].Connections = []string{"10.0.0.2:2380"}
	st.Peers[1].Connections = []string{"10.0.0.1:2380", "10.0.0.4:2380"}
	st.Peers[2] = mesh.PeerStatus{Name: "10.0.0.3:2380", NickName: "c", Connections: []string{}}
	st.Peers = append(st.Peers, mesh.PeerStatus{Name: "10.0.0.4:2380", NickName: "d", Connections: []string{"10.0.0.2:2380"}, Reachable: true})
	st.Connections = []mesh.ConnectionStatus{
		{Peer: "10.0.0.1:2380", State: "established", RTT: "1ms"},
		{Peer: "10.0.0.4:2380", State: "established", RTT: "2ms"},
	}
	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members})
	byName := map[string]Member{}
	for _, m := range g.Members {
		byName[m.Name] = m
	}
	if m := byName["c"]; m.InMesh || m.NotMember {
		t.Errorf("c = %+v, want a member out of the mesh", m)
	}
	if m := byName["d"]; !m.NotMember || !m.InMesh || m.Peer != "10.0.0.4:2380" {
		t.Errorf("d = %+v, want a reachable mesh peer outside the membership", m)
	}
	if l := linkState(g, "b", "d"); l.State != LinkUp || l.RTT != "2ms" {
		t.Errorf("b-d = %+v", l)
	}
	for _, r := range g.Routes {
		switch r.To {
		case "c":
			if r.String("a") != "a→c unreachable" || r.Hops() != 0 {
				t.Errorf("route to c = %q", r.String("a"))
			}
		case "d":
			t.Errorf("route to a non-member: %+v", r)
		}
	}
}

func TestBFSParentsMatchesTheMeshOrder(t *testing.T) {
	// Square a-b, a-c, b-d, c-d: d is two hops from a through b or c; the
	// mesh picks the lower name, b.
	adj := map[mesh.PeerName][]mesh.PeerName{
		"a": {"c", "b"}, "b": {"d", "a"}, "c": {"a", "d"}, "d": {"c", "b"},
	}
	p := bfsParents(adj, "a")
	if p["d"] != "b" || p["b"] != "a" || p["c"] != "a" || p["a"] != "" {
		t.Fatalf("parents %v", p)
	}
}

func TestBuildViewerLinksComeFromItsLiveConnections(t *testing.T) {
	st, members := triangle()
	// b just lost its connection to c; its gossiped record (and c's)
	// still claim the link.
	st.Connections = st.Connections[:1]
	g := Build(Input{Self: st, SelfName: "b", LeaderName: "a", Members: members})
	if l := linkState(g, "b", "c"); l.State != LinkConnecting {
		t.Errorf("b-c = %+v, want connecting (only c still claims it)", l)
	}
	for _, r := range g.Routes {
		if r.To == "c" && len(r.Path) != 0 {
			t.Errorf("route to c = %q, want unreachable", r.String("a"))
		}
	}
}
