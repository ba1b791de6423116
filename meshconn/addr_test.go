package meshconn

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/meshetcd/meshetcd/mesh"
)

func TestMeshAddr(t *testing.T) {
	a := MeshAddr{Peer: "node-1.example:7"}
	if a.Network() != "mesh" {
		t.Fatalf("Network() = %q", a.Network())
	}
	if a.String() != "mesh://node-1.example:7" {
		t.Fatalf("String() = %q", a.String())
	}
	got, err := ParseAddr(a.String())
	if err != nil || got != a {
		t.Fatalf("ParseAddr(%q) = %v, %v", a.String(), got, err)
	}
	var _ net.Addr = got
}

func TestParseAddrRejects(t *testing.T) {
	for _, s := range []string{
		"", "mesh://", "node", "udp://node", "mesh:/node", "mesh://a/b", "mesh://a b",
		"mesh://" + strings.Repeat("x", 65), "mesh://caf\u00e9", "mesh://a\x00", "MESH://a",
	} {
		if a, err := ParseAddr(s); !errors.Is(err, ErrBadAddr) {
			t.Errorf("ParseAddr(%q) = %v, %v; want an ErrBadAddr error", s, a, err)
		}
	}
	if _, err := ParseAddr("mesh://" + strings.Repeat("x", 64)); err != nil {
		t.Errorf("64-byte name rejected: %v", err)
	}
}

func TestAddrPeer(t *testing.T) {
	if p, err := addrPeer(&MeshAddr{Peer: "b"}); err != nil || p != mesh.PeerName("b") {
		t.Fatalf("addrPeer(*MeshAddr) = %q, %v", p, err)
	}
	for _, a := range []net.Addr{nil, (*MeshAddr)(nil), MeshAddr{}, &net.UDPAddr{}} {
		if _, err := addrPeer(a); !errors.Is(err, ErrBadAddr) {
			t.Errorf("addrPeer(%#v) = %v; want ErrBadAddr", a, err)
		}
	}
}
