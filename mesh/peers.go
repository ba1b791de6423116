package mesh

import "slices"

// ReachablePeers are the other peers this router has a route to now, in
// name order: whom a member may ask for the cluster while it bootstraps.
func (r *Router) ReachablePeers() []PeerName {
	rt := r.routes.Load()
	peers := make([]PeerName, 0, len(rt.hops))
	for name := range rt.hops {
		if name != r.name {
			peers = append(peers, name)
		}
	}
	slices.Sort(peers)
	return peers
}
