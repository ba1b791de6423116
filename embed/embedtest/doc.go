// Package embedtest supplies the in-memory network that embed.StartCluster
// takes as an option (ClusterOptions.Network) for tests and examples: every
// member on its own host of a mesh/memnet network, with memnet's fault
// injection (Cut, Heal, Partition, Blackhole, delays, loss; hostile links:
// SetLoss, SetJitter, SetOneWay, Flap, SetBandwidth). The meshetcd
// binary never imports it, so test doubles are not linked into it.
//
//	nw := embedtest.NewNetwork()
//	c, err := embed.StartCluster(ctx, 3, embed.ClusterOptions{Network: nw})
//	...
//	c.Cut(0, 1)                                // through the cluster
//	nw.Blackhole(c.HostName(0), c.HostName(2)) // or memnet directly
package embedtest
