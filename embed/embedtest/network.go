package embedtest

import (
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

// Network is a memnet network as embed.Network: Host hands out mesh
// transports, and every memnet fault method is available.
type Network struct{ *memnet.Network }

// NewNetwork returns an empty in-memory network.
func NewNetwork(opts ...memnet.Option) Network { return Network{memnet.New(opts...)} }

// Host is the mesh transport of the host named name.
func (n Network) Host(name string) mesh.Transport { return n.Network.Host(name) }
