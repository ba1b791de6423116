package mesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Status is a JSON-marshallable snapshot of the router.
type Status struct {
	Name         PeerName `json:"name"`
	NickName     string   `json:"nickname,omitempty"`
	UID          string   `json:"uid"`
	Version      uint64   `json:"version"`
	ClusterLabel string   `json:"cluster_label"`
	Encrypted    bool     `json:"encrypted"`
	// Encryption is our mode: "psk" (mesh secret: confidential and
	// authenticated), "ephemeral" (auto TLS: confidential against passive
	// eavesdroppers, not authenticated), "tls" (mutual X.509 TLS), "tls+psk"
	// (TLS and the mesh secret) or "plaintext".
	Encryption string   `json:"encryption"`
	Advertise  []string `json:"advertise,omitempty"`
	// NameCollision is set when another live peer uses our name.
	NameCollision string             `json:"name_collision,omitempty"`
	Peers         []PeerStatus       `json:"peers"`
	Connections   []ConnectionStatus `json:"connections"`
	Routes        []RouteStatus      `json:"routes"`
	Links         []LinkStatus       `json:"links"` // per-peer link health and path (status_links.go)
	Targets       []TargetStatus     `json:"targets"`
	// HandshakeFailures are the most recent refused handshakes, newest
	// last; ErrAuth and ErrWrongCluster show up here.
	HandshakeFailures []HandshakeFailure `json:"handshake_failures,omitempty"`
	Tombstones        []PeerName         `json:"tombstones,omitempty"`
	// RecentLosses are the latest lost connections with their reasons.
	RecentLosses []string          `json:"recent_losses,omitempty"`
	Counters     map[string]uint64 `json:"counters"`
	Channels     []ChannelStatus   `json:"channels"`
	// LocalHealth is the Lifeguard local health score: 0 healthy, up to 8
	// when our own goroutines run late (a starved process), which
	// lengthens the dead timeout of every link by up to half.
	LocalHealth int `json:"local_health"`
}

// PeerStatus is one topology record as we know it.
type PeerStatus struct {
	Name        PeerName `json:"name"`
	NickName    string   `json:"nickname,omitempty"`
	UID         string   `json:"uid"`
	Version     uint64   `json:"version"`
	Addrs       []string `json:"addrs,omitempty"`
	Connections []string `json:"connections"` // "peer" or "peer (pending)"
	Reachable   bool     `json:"reachable"`
}

// ConnectionStatus is one of our connections.
type ConnectionStatus struct {
	Peer      PeerName `json:"peer"`
	PeerUID   string   `json:"peer_uid"`
	Addr      string   `json:"addr"`
	State     string   `json:"state"`     // established, standby, handshake
	Direction string   `json:"direction"` // outbound, inbound
	Encrypted bool     `json:"encrypted"`
	// Encryption is the connection's mode: "psk", "ephemeral", "tls", "tls+psk" or "plaintext".
	Encryption string `json:"encryption"`
	RTT        string `json:"rtt"`
	Since      string `json:"since"`
	FramesIn   uint64 `json:"frames_in"`
	FramesOut  uint64 `json:"frames_out"`
	BytesIn    uint64 `json:"bytes_in"`
	BytesOut   uint64 `json:"bytes_out"`
	Queued     int64  `json:"queued_bytes"`
	Drops      uint64 `json:"drops"`
}

// RouteStatus is one unicast route.
type RouteStatus struct {
	Dest    PeerName `json:"dest"`
	NextHop PeerName `json:"next_hop"`
	Hops    int      `json:"hops"`
}

// HandshakeFailure is one refused connection attempt.
type HandshakeFailure struct {
	Addr      string `json:"addr"`
	Direction string `json:"direction"`
	// Reason is the short cause of a refusal ("mesh secret mismatch",
	// "cluster label mismatch", ...); empty for other failures.
	Reason string    `json:"reason,omitempty"`
	Error  string    `json:"error"`
	Time   time.Time `json:"time"`
}

// ChannelStatus counts one channel's deliveries.
type ChannelStatus struct {
	ID            ChannelID `json:"id"`
	Name          string    `json:"name"`
	Kind          string    `json:"kind"`
	Delivered     uint64    `json:"delivered"`
	Dropped       uint64    `json:"dropped"`
	HandlerErrors uint64    `json:"handler_errors"`
}

// Status returns a snapshot of peers, connections, routes and counters.
func (r *Router) Status() Status {
	rt := r.routes.Load()
	r.mu.Lock()
	st := Status{
		Name:         r.name,
		NickName:     r.cfg.NickName,
		UID:          fmt.Sprintf("%016x", r.uid),
		Version:      r.topo.selfRecord().Version,
		ClusterLabel: r.cfg.ClusterLabel,
		Encrypted:    r.psk != nil || r.cfg.EphemeralEncryption || r.cfg.TLS != nil,
		Encryption:   r.encryption(),
		Advertise:    slices.Clone(r.advertise),
	}
	if r.collision != nil {
		st.NameCollision = fmt.Sprintf("%v: peer uid %016x (version %d) also uses %q", ErrNameCollision, r.collision.UID, r.collision.Version, r.name)
	}
	for _, name := range r.topo.sortedNames() {
		rec := r.topo.records[name]
		ps := PeerStatus{Name: name, NickName: rec.NickName, UID: fmt.Sprintf("%016x", rec.UID), Version: rec.Version,
			Addrs: slices.Clone(rec.Addrs), Connections: []string{}}
		for _, c := range rec.Conns {
			s := string(c.Peer)
			if !c.Established {
				s += " (pending)"
			}
			ps.Connections = append(ps.Connections, s)
		}
		_, ps.Reachable = rt.hops[name]
		st.Peers = append(st.Peers, ps)
	}
	for name := range r.topo.tombstones {
		st.Tombstones = append(st.Tombstones, name)
	}
	slices.Sort(st.Tombstones)
	st.Links = r.linksLocked(rt)
	r.mu.Unlock()
	st.LocalHealth = r.health.get()
	st.HandshakeFailures = r.failures.snapshot()
	now := r.cfg.Clock.Now()
	entries, handshakes := r.conns.snapshot()
	for _, e := range entries {
		c, state := e.c, e.state // standby: lost a duplicate tie-break
		dir := "inbound"
		if c.outbound {
			dir = "outbound"
		}
		st.Connections = append(st.Connections, ConnectionStatus{
			Peer: c.remote, PeerUID: fmt.Sprintf("%016x", c.remoteUID), Addr: c.addr, State: state,
			Direction: dir, Encrypted: c.send != nil || r.cfg.TLS != nil, Encryption: linkEncryption(c.nc, c.mode), RTT: time.Duration(c.rtt.Load()).String(),
			Since:    now.Sub(c.since).Round(time.Millisecond).String(),
			FramesIn: c.framesIn.Load(), FramesOut: c.framesOut.Load(), BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
			Queued: c.queuedBytes.Load(), Drops: c.drops.Load(),
		})
	}
	for _, addr := range handshakes {
		st.Connections = append(st.Connections, ConnectionStatus{Addr: addr, State: "handshake", Encrypted: st.Encrypted, Encryption: st.Encryption})
	}
	slices.SortFunc(st.Connections, func(a, b ConnectionStatus) int {
		if a.Peer != b.Peer {
			if a.Peer < b.Peer {
				return -1
			}
			return 1
		}
		if a.Addr < b.Addr {
			return -1
		}
		return 1
	})

	for dest, hop := range rt.next {
		st.Routes = append(st.Routes, RouteStatus{Dest: dest, NextHop: hop, Hops: rt.hops[dest]})
	}
	slices.SortFunc(st.Routes, func(a, b RouteStatus) int {
		if a.Dest < b.Dest {
			return -1
		}
		return 1
	})
	if st.Routes == nil {
		st.Routes = []RouteStatus{}
	}
	if st.Connections == nil {
		st.Connections = []ConnectionStatus{}
	}
	st.Targets = r.maker.status()
	for _, ch := range *r.channelTable.Load() {
		kind := "gossip"
		if ch.datagram != nil {
			kind = "datagram"
		}
		st.Channels = append(st.Channels, ChannelStatus{ID: ch.id, Name: ch.name, Kind: kind,
			Delivered: ch.delivered.Load(), Dropped: ch.dropped.Load(), HandlerErrors: ch.handlerErrors.Load()})
	}
	slices.SortFunc(st.Channels, func(a, b ChannelStatus) int { return int(a.ID) - int(b.ID) })
	c := &r.counters
	st.Counters = map[string]uint64{
		"drop_no_route":           c.dropNoRoute.Load(),
		"drop_queue_full":         c.dropQueueFull.Load(),
		"drop_ttl":                c.dropTTL.Load(),
		"drop_unknown_channel":    c.dropUnknownChannel.Load(),
		"drop_duplicate":          c.dropDuplicate.Load(),
		"forwarded":               c.forwarded.Load(),
		"rerouted":                c.rerouted.Load(),
		"accept_throttled":        c.acceptThrottled.Load(),
		"handshake_failures":      c.handshakeFailures.Load(),
		"route_recalculations":    c.routeRecalcs.Load(),
		"rejected_topology_items": c.rejectedRecords.Load(),
		"connections_lost":        c.connsLost.Load(),
		"link_suspicions":         c.suspicions.Load(),
	}
	c.lastLossMu.Lock()
	st.RecentLosses = slices.Clone(c.lastLoss)
	c.lastLossMu.Unlock()
	return st
}

// StatusHandler serves Status as JSON (meshetcd mounts it at /mesh/status).
func (r *Router) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r.Status())
	})
}

// routeSub is one SubscribeRoutes subscriber. Events are coalesced per peer
// (the latest wins) in pending, and a goroutine owned by the router moves
// them to the subscriber's channel, so a slow subscriber never blocks the
// router and never sees a stale final state.
type routeSub struct {
	mu      sync.Mutex
	pending map[PeerName]RouteEvent
	order   []PeerName
	out     chan RouteEvent
	notify  chan struct{}
	done    chan struct{}
	once    sync.Once
}

func (s *routeSub) push(evs []RouteEvent) {
	s.mu.Lock()
	for _, ev := range evs {
		if _, ok := s.pending[ev.Peer]; !ok {
			s.order = append(s.order, ev.Peer)
		}
		s.pending[ev.Peer] = ev
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *routeSub) pop() (RouteEvent, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return RouteEvent{}, false
	}
	p := s.order[0]
	s.order = s.order[1:]
	ev := s.pending[p]
	delete(s.pending, p)
	return ev, true
}

func (s *routeSub) closeLocked() { s.once.Do(func() { close(s.done) }) }

// SubscribeRoutes returns a channel of route changes. The current routes
// are delivered first as events. Events for one peer are coalesced while
// the subscriber is behind. cancel (or Stop) closes the channel.
func (r *Router) SubscribeRoutes(buffer int) (<-chan RouteEvent, func()) {
	s := &routeSub{
		pending: map[PeerName]RouteEvent{},
		out:     make(chan RouteEvent, max(buffer, 0)),
		notify:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		close(s.out)
		return s.out, func() {}
	}
	r.subs[s] = struct{}{}
	evs, _ := routeEvents(nil, r.routes.Load())
	s.push(evs)
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer close(s.out)
		for {
			ev, ok := s.pop()
			if !ok {
				select {
				case <-s.notify:
					continue
				case <-s.done:
					return
				case <-r.ctx.Done():
					return
				}
			}
			select {
			case s.out <- ev:
			case <-s.done:
				return
			case <-r.ctx.Done():
				return
			}
		}
	}()
	cancel := func() {
		r.mu.Lock()
		delete(r.subs, s)
		s.closeLocked()
		r.mu.Unlock()
	}
	return s.out, cancel
}
