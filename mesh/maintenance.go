package mesh

import (
	"slices"
	"time"

	"go.uber.org/zap"
)

// Maintenance: our own record follows our connections, routes are
// recalculated (at once for local changes, debounced for topology news),
// our record is gossiped when it changes, every channel's complete state
// goes to one random neighbour per GossipInterval (anti-entropy), and
// unreachable peers and stale standbys are collected.

// updateSelfLocked rewrites our record from our connections and schedules
// gossip of it if it changed.
func (r *Router) updateSelfLocked() {
	inUse := r.conns.current()
	conns := make([]connRecord, 0, len(inUse))
	for name, c := range inUse {
		conns = append(conns, connRecord{Peer: name, Established: true, Outbound: c.outbound})
	}
	if r.topo.setSelfConns(conns) {
		r.signalSelfChanged()
	}
}

func (r *Router) signalSelfChanged() {
	select {
	case r.selfChanged <- struct{}{}:
	default:
	}
}

func (r *Router) requestRecalc() {
	select {
	case r.recalcReq <- struct{}{}:
	default:
	}
}

// recalcLocked recomputes routes now and publishes them with their events.
func (r *Router) recalcLocked() {
	inUse := r.conns.current()
	direct := make(map[PeerName]uint64, len(inUse))
	var degraded map[PeerName]bool
	for name, c := range inUse {
		direct[name] = c.remoteUID
		if c.quality.isDegraded() || c.suspectSince.Load() != 0 {
			if degraded == nil {
				degraded = map[PeerName]bool{}
			}
			degraded[name] = true
		}
	}
	cur := computeRoutesAvoiding(r.name, r.topo.records, direct, degraded)
	old := r.routes.Swap(cur)
	r.counters.routeRecalcs.Add(1)
	evs, hopMoved := routeEvents(old, cur)
	if len(evs) == 0 {
		return
	}
	for s := range r.subs {
		s.push(evs)
	}
	// A peer lost or a next hop moved may want a new connection; a path
	// that changed further along does not.
	if hopMoved {
		r.maker.poke()
	}
}

// maintenanceLoop runs debounced route recalculation, gossip of our own
// record, periodic anti-entropy and topology GC.
func (r *Router) maintenanceLoop() {
	defer r.wg.Done()
	gossipTimer := time.NewTimer(r.jitter(r.cfg.GossipInterval))
	defer gossipTimer.Stop()
	gcTicker := time.NewTicker(min(time.Second, max(r.cfg.GCGrace/4, 10*time.Millisecond)))
	defer gcTicker.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.recalcReq:
			select {
			case <-time.After(r.cfg.RouteDebounce):
			case <-r.ctx.Done():
				return
			}
			r.mu.Lock()
			r.recalcLocked()
			r.mu.Unlock()
		case <-r.selfChanged:
			r.mu.Lock()
			self := r.topo.selfRecord().clone()
			r.mu.Unlock()
			topo := r.channelByID(topologyChannel)
			r.gossipToNeighbours(topo, newTopologyUpdate([]*peerRecord{self}), "")
		case <-gossipTimer.C:
			r.antiEntropy()
			gossipTimer.Reset(r.jitter(r.cfg.GossipInterval))
		case <-gcTicker.C:
			r.collectGarbage()
		}
	}
}

// jitter spreads periodic work over [0.75d, 1.25d).
func (r *Router) jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(r.randIntN(int(d/2)+1))
}

// antiEntropy sends each gossip channel's complete state (the topology's
// digest) to one random neighbour.
func (r *Router) antiEntropy() {
	table := r.conns.current()
	if len(table) == 0 {
		return
	}
	names := make([]PeerName, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, ch := range *r.channelTable.Load() {
		if ch.gossiper == nil {
			continue
		}
		var data GossipData
		if ch.id == topologyChannel {
			// Topology anti-entropy is digest-first: O(peers), not
			// O(peers × degree); the neighbour pushes back what we miss.
			data = r.topologyDigest(false)
		} else {
			data = ch.gossiper.Gossip()
		}
		if data != nil {
			table[names[r.randIntN(len(names))]].queueGossip(ch, data)
		}
	}
}

func (r *Router) collectGarbage() {
	now := r.cfg.Clock.Now()
	for _, sb := range r.conns.expiredStandbys(now, r.cfg.HandshakeTimeout+r.cfg.DeadTimeout) {
		sb.closeGracefully("duplicate connection")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.routes.Load()
	inUse := r.conns.current()
	removed := r.topo.gc(now,
		func(p PeerName) bool { _, ok := rt.hops[p]; return ok },
		func(p PeerName) bool { _, ok := inUse[p]; return ok },
		r.cfg.GCGrace, r.cfg.TombstoneTTL)
	if len(removed) > 0 {
		r.log.Info("mesh peers garbage collected", zap.Int("count", len(removed)))
		r.recalcLocked()
	}
}
