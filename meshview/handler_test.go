package meshview

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

type fakeSource struct {
	st      mesh.Status
	self    string
	leader  string
	members []MemberInfo
}

func (f fakeSource) MeshStatus() mesh.Status { return f.st }
func (f fakeSource) Membership() (string, string, []MemberInfo) {
	return f.self, f.leader, f.members
}

func serve(t *testing.T, h *Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestPageIsSelfContainedHTML(t *testing.T) {
	st, members := triangle()
	srv := serve(t, NewHandler(fakeSource{st: st, self: "b", leader: "a", members: members}, Config{}))
	resp, err := http.Get(srv.URL + PagePath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not forbid external assets", csp)
	}
	for _, external := range []string{"src=\"http", "href=\"http", "@import", "url(http"} {
		if strings.Contains(body.String(), external) {
			t.Errorf("page refers to an external asset (%s)", external)
		}
	}
	if !strings.Contains(body.String(), `fetch("mesh/graph"`) {
		t.Errorf("page does not fetch its graph")
	}
}

func TestGraphAsksOtherMembersForRTT(t *testing.T) {
	st, members := triangle()
	// a–c is up, and only a (served by a fake member) knows its RTT.
	st.Peers[0].Connections = append(st.Peers[0].Connections, "10.0.0.3:2380")
	st.Peers[2].Connections = append(st.Peers[2].Connections, "10.0.0.1:2380")
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != StatusPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(mesh.Status{Name: "10.0.0.1:2380", Connections: []mesh.ConnectionStatus{{Peer: "10.0.0.3:2380", State: "established", RTT: "3ms"}}})
	}))
	defer a.Close()
	// c hangs: the graph must not wait for it longer than PeerTimeout.
	hang := make(chan struct{})
	c := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer c.Close()
	defer close(hang)
	members[0].ClientURLs = []string{a.URL}
	members[2].ClientURLs = []string{c.URL}

	srv := serve(t, NewHandler(fakeSource{st: st, self: "b", leader: "a", members: members}, Config{PeerTimeout: 300 * time.Millisecond}))
	start := time.Now()
	resp, err := http.Get(srv.URL + GraphPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("graph took %v with a hanging member (PeerTimeout 300ms)", took)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	var g Graph
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatal(err)
	}
	if l := linkState(g, "a", "c"); l.State != LinkUp || l.RTT != "3ms" {
		t.Errorf("a-c = %+v, want up with a's rtt 3ms", l)
	}
	if g.Leader != "a" || len(g.Members) != 3 {
		t.Errorf("leader %q, %d members", g.Leader, len(g.Members))
	}
}

func TestMeshEndpointsAreReadOnly(t *testing.T) {
	st, members := triangle()
	srv := serve(t, NewHandler(fakeSource{st: st, self: "b", members: members}, Config{}))
	for _, p := range []string{PagePath, GraphPath} {
		resp, err := http.Post(srv.URL+p, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", p, resp.StatusCode)
		}
	}
}
