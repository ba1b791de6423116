package peer

import (
	"sync/atomic"
	"testing"

	"github.com/meshetcd/meshetcd/mesh"
)

// resolvingTransport is a RaftTransport with only what peer() uses: a
// Resolve that counts its calls and answers from urls.
func resolvingTransport(urls map[uint64][]string, version *atomic.Uint64, calls *int) *RaftTransport {
	return &RaftTransport{
		names: map[uint64]resolvedPeer{},
		resolve: func(id uint64) (mesh.PeerName, bool) {
			*calls++
			u, ok := urls[id]
			if !ok {
				return "", false
			}
			// A copy, as the membership hands out (Member.Clone).
			name, err := NameFromURLs(append([]string(nil), u...))
			return name, err == nil
		},
		membership: version.Load,
	}
}

// TestPeerResolvedOncePerMembershipVersion: the transport resolves a member
// id once while the membership version stays put, again after it changed
// (new peer URLs are followed, a removed member is forgotten), and every
// message while the version is 0 (member not running).
func TestPeerResolvedOncePerMembershipVersion(t *testing.T) {
	urls := map[uint64][]string{2: {"http://10.0.0.2:2380"}}
	var version atomic.Uint64
	calls := 0
	tr := resolvingTransport(urls, &version, &calls)

	expect := func(id uint64, wantName mesh.PeerName, wantOK bool, wantCalls int) {
		t.Helper()
		name, ok := tr.peer(id)
		if name != wantName || ok != wantOK || calls != wantCalls {
			t.Fatalf("peer(%d) = %q, %v after %d resolves; want %q, %v after %d", id, name, ok, calls, wantName, wantOK, wantCalls)
		}
	}
	expect(2, "10.0.0.2:2380", true, 1) // version 0: no reuse
	expect(2, "10.0.0.2:2380", true, 2)
	version.Store(1)
	expect(2, "10.0.0.2:2380", true, 3)
	expect(2, "10.0.0.2:2380", true, 3) // reused
	expect(2, "10.0.0.2:2380", true, 3)
	expect(3, "", false, 4) // unknown members are never cached
	expect(3, "", false, 5)

	urls[2] = []string{"http://10.0.0.9:2380"} // member update...
	version.Store(2)                           // ...committed
	expect(2, "10.0.0.9:2380", true, 6)
	expect(2, "10.0.0.9:2380", true, 6)

	delete(urls, 2) // member removed
	version.Store(3)
	expect(2, "", false, 7)
	tr.mu.Lock()
	_, kept := tr.names[2]
	tr.mu.Unlock()
	if kept {
		t.Fatal("a removed member's peer is still remembered for route events")
	}
}

// BenchmarkPeerResolve is the per-message cost of finding a member's mesh
// peer: resolving every time (membership version 0) against reusing.
func BenchmarkPeerResolve(b *testing.B) {
	urls := map[uint64][]string{2: {"https://10.0.0.2:2380", "https://node-2.example.internal:2380"}}
	for _, bc := range []struct {
		name    string
		version uint64
	}{{"every-message", 0}, {"cached", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			var version atomic.Uint64
			version.Store(bc.version)
			calls := 0
			tr := resolvingTransport(urls, &version, &calls)
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tr.peer(2); !ok {
					b.Fatal("not resolved")
				}
			}
		})
	}
}
