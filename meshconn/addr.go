package meshconn

import (
	"fmt"
	"net"
	"strings"

	"github.com/meshetcd/meshetcd/mesh"
)

// Network is the network name of every MeshAddr.
const Network = "mesh"

const addrScheme = Network + "://"

// maxPeerNameLen mirrors the mesh's rule for PeerName (1..64 bytes).
const maxPeerNameLen = 64

// MeshAddr is the address of one mesh peer. It implements net.Addr.
type MeshAddr struct {
	Peer mesh.PeerName
}

var _ net.Addr = MeshAddr{}

// Network returns "mesh".
func (a MeshAddr) Network() string { return Network }

// String returns "mesh://<peer-name>"; ParseAddr reverses it.
func (a MeshAddr) String() string { return addrScheme + string(a.Peer) }

// ParseAddr parses "mesh://<peer-name>". The peer name must follow the
// mesh's rule: 1..64 bytes of printable ASCII without spaces or '/'.
func ParseAddr(s string) (MeshAddr, error) {
	name, ok := strings.CutPrefix(s, addrScheme)
	if !ok {
		return MeshAddr{}, fmt.Errorf("meshconn: address %q: %w", s, errNoScheme)
	}
	if err := validPeerName(name); err != nil {
		return MeshAddr{}, fmt.Errorf("meshconn: address %q: %w", s, err)
	}
	return MeshAddr{Peer: mesh.PeerName(name)}, nil
}

func validPeerName(name string) error {
	if len(name) == 0 || len(name) > maxPeerNameLen {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrBadAddr, len(name), maxPeerNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("%w: byte %#02x at %d", ErrBadAddr, c, i)
		}
	}
	return nil
}

// addrPeer extracts the peer from a net.Addr given to WriteTo.
func addrPeer(a net.Addr) (mesh.PeerName, error) {
	switch v := a.(type) {
	case MeshAddr:
		return v.Peer, validPeerName(string(v.Peer))
	case *MeshAddr:
		if v == nil {
			return "", fmt.Errorf("%w: nil *MeshAddr", ErrBadAddr)
		}
		return v.Peer, validPeerName(string(v.Peer))
	case nil:
		return "", fmt.Errorf("%w: nil address", ErrBadAddr)
	default:
		return "", fmt.Errorf("%w: %s address %q is not a mesh address", ErrBadAddr, a.Network(), a.String())
	}
}
