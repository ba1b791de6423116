// Package embedtest supplies the in-memory network that embed.StartCluster
// takes as an option (ClusterOptions.Network) for tests and examples: every
// member on its own host of a mesh/memnet network, with memnet's fault
// injection (Cut, Heal, Partition, Blackhole, delays, loss). The meshetcd
// binary never imports it, so test doubles are not linked into it.
//
//	nw := embedtest.NewNetwork()
//	c, err := embed.StartCluster(ctx, 3, embed.ClusterOptions{Network: nw})
//	...
//	c.Cut(0, 1)                                // through the cluster
//	nw.Blackhole(c.HostName(0), c.HostName(2)) // or memnet directly
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
