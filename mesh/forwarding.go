package mesh

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// The data plane: unicast sends and relaying by the route table, broadcast
// along the source's spanning tree with per-source deduplication, one more
// chance over another route for frames queued on a dead connection, and
// gossip fan-out to a subset of neighbours. Lookups take no lock: routes
// and the connection table are published through atomic pointers.

// newFrame builds a frame in a pooled buffer.
func (r *Router) newFrame(typ, ttl uint8, ch ChannelID, seq uint64, dst PeerName, class int, payload []byte) *frameBuf {
	return r.newFrameOf(typ, ttl, ch, seq, dst, class, nil, payload)
}

// newFrameOf is newFrame for a payload given in two parts, head then body,
// each copied once, straight into the frame.
func (r *Router) newFrameOf(typ, ttl uint8, ch ChannelID, seq uint64, dst PeerName, class int, head, body []byte) *frameBuf {
	src := r.name
	f := r.pool.get(envelopeLen(src, dst, len(head)+len(body)))
	h := putEnvelopeHeader(f.b[frameHeaderLen:], typ, ttl, ch, seq, src, dst)
	f.b[frameHeaderLen+1] = uint8(class)
	n := copy(f.b[frameHeaderLen+h:], head)
	copy(f.b[frameHeaderLen+h+n:], body)
	return f
}

// sendUnicast queues the payload head+body for dst on the next hop's
// connection.
func (r *Router) sendUnicast(ch *channel, dst PeerName, head, body []byte) error {
	if n := len(head) + len(body); n > r.cfg.MaxDatagramSize {
		return fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, n, r.cfg.MaxDatagramSize)
	}
	if r.ctx.Err() != nil {
		return ErrClosed
	}
	if dst == r.name {
		f := r.newFrameOf(msgUnicast, 1, ch.id, 0, dst, ch.class, head, body)
		r.deliver(ch.id, deliverUnicast, r.name, f, f.envelope()[f.n-len(head)-len(body):])
		return nil
	}
	hop, ok := r.routes.Load().nextHop(dst)
	if !ok {
		r.counters.dropNoRoute.Add(1)
		return ErrNoRoute
	}
	c := r.connFor(hop)
	if c == nil {
		r.counters.dropNoRoute.Add(1)
		return ErrNoRoute
	}
	f := r.newFrameOf(msgUnicast, r.cfg.DefaultTTL, ch.id, 0, dst, ch.class, head, body)
	if err := c.enqueue(f, ch.class); err != nil {
		r.pool.put(f)
		if errors.Is(err, ErrQueueFull) {
			r.counters.dropQueueFull.Add(1)
		}
		return err
	}
	return nil
}

// forward relays a unicast frame toward its destination. It reuses the
// received buffer: no allocation per relayed frame.
func (r *Router) forward(f *frameBuf, env envelope) {
	if env.ttl <= 1 {
		r.counters.dropTTL.Add(1)
		r.pool.put(f)
		return
	}
	f.b[frameHeaderLen+2] = env.ttl - 1
	hop, ok := r.routes.Load().relayHop(PeerName(env.dst))
	var c *conn
	if ok {
		c = r.conns.lookup(hop)
	}
	if c == nil {
		r.counters.dropNoRoute.Add(1)
		r.pool.put(f)
		return
	}
	if err := c.enqueue(f, int(env.flags&3)%numClasses); err != nil {
		r.counters.dropQueueFull.Add(1)
		r.pool.put(f)
		return
	}
	r.counters.forwarded.Add(1)
}

// broadcast originates a broadcast on ch.
func (r *Router) broadcast(ch *channel, payload []byte) {
	if len(payload) > r.cfg.MaxDatagramSize || r.ctx.Err() != nil {
		return
	}
	seq := r.bcastSeq.Add(1)
	rt := r.routes.Load()
	for _, child := range rt.broadcastChildren(r.name) {
		c := r.connFor(child)
		if c == nil {
			continue
		}
		f := r.newFrame(msgBroadcast, r.cfg.DefaultTTL, ch.id, seq, "", ch.class, payload)
		if err := c.enqueue(f, ch.class); err != nil {
			r.pool.put(f)
		}
	}
}

// handleBroadcast delivers a broadcast once and forwards it to our
// children in the source's tree; it takes ownership of f.
func (r *Router) handleBroadcast(f *frameBuf, env envelope) {
	src := PeerName(env.src)
	if src == r.name || !r.firstSighting(src, env.seq) {
		r.counters.dropDuplicate.Add(1)
		r.pool.put(f)
		return
	}
	if env.ttl > 1 {
		f.b[frameHeaderLen+2] = env.ttl - 1
		rt := r.routes.Load()
		for _, child := range rt.broadcastChildren(src) {
			c := r.connFor(child)
			if c == nil {
				continue
			}
			cp := r.pool.get(f.n)
			copy(cp.b[frameHeaderLen:frameHeaderLen+f.n], f.envelope())
			if err := c.enqueue(cp, int(env.flags&3)%numClasses); err != nil {
				r.pool.put(cp)
			}
		}
	} else {
		r.counters.dropTTL.Add(1)
	}
	r.deliver(env.channel, deliverBroadcast, src, f, env.payload)
}

// dedupWindow remembers the latest 64 broadcast sequence numbers of one
// source. Sequences start at the source's boot time in nanoseconds, so a
// restarted source is never mistaken for an old one.
type dedupWindow struct {
	highest uint64
	seen    uint64 // bit i: highest-i was seen
}

func (w *dedupWindow) observe(seq uint64) bool {
	switch {
	case seq > w.highest:
		shift := seq - w.highest
		if shift >= 64 {
			w.seen = 0
		} else {
			w.seen <<= shift
		}
		w.seen |= 1
		w.highest = seq
		return true
	case w.highest-seq >= 64:
		return false // too old to tell: treat as a duplicate
	default:
		bit := uint64(1) << (w.highest - seq)
		if w.seen&bit != 0 {
			return false
		}
		w.seen |= bit
		return true
	}
}

func (r *Router) firstSighting(src PeerName, seq uint64) bool {
	r.dedupMu.Lock()
	defer r.dedupMu.Unlock()
	w, ok := r.dedup[src]
	if !ok {
		if len(r.dedup) >= 2*r.cfg.MaxPeers {
			clear(r.dedup)
		}
		w = &dedupWindow{}
		r.dedup[src] = w
	}
	return w.observe(seq)
}

// neighbourSubset picks min(all, max(3, 2·log2(peers))) random neighbours,
// excluding one (the peer we heard the news from).
func (r *Router) neighbourSubset(exclude PeerName) []*conn {
	table := r.conns.current()
	cands := make([]*conn, 0, len(table))
	for name, c := range table {
		if name != exclude {
			cands = append(cands, c)
		}
	}
	slices.SortFunc(cands, func(a, b *conn) int {
		if a.remote < b.remote {
			return -1
		}
		return 1
	})
	peers := len(r.routes.Load().hops)
	want := max(3, 2*bits.Len(uint(peers)))
	if len(cands) <= want {
		return cands
	}
	r.rngMu.Lock()
	r.rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	r.rngMu.Unlock()
	return cands[:want]
}

// gossipCloner is implemented by GossipData that is cheap to copy; each
// neighbour then gets its own copy, so merging into one neighbour's
// pending data never leaks into another's.
type gossipCloner interface{ clone() GossipData }

func (r *Router) gossipToNeighbours(ch *channel, data GossipData, exclude PeerName) {
	for _, c := range r.neighbourSubset(exclude) {
		if cl, ok := data.(gossipCloner); ok {
			c.queueGossip(ch, cl.clone())
		} else {
			c.queueGossip(ch, data)
		}
	}
}

// maxReroutes bounds how often one frame is moved from a dying
// connection to another. More than once: the connection a frame was moved
// to may itself close a moment later (a duplicate connection retired by
// the tie-break, or the same fault reaching a second link), and dropping
// it then would lose what the first move saved; a bound, so a frame cannot
// bounce between failing links for ever.
const maxReroutes = 3

// reroute moves a frame from a dead connection to the current route, at
// most maxReroutes times; a frame that has used them up is dropped and
// counted as having no route.
func (r *Router) reroute(f *frameBuf) {
	env, err := parseEnvelope(f.envelope())
	if err != nil || r.ctx.Err() != nil || env.typ != msgUnicast {
		r.pool.put(f)
		return
	}
	if f.reroutes >= maxReroutes {
		r.counters.dropNoRoute.Add(1)
		r.pool.put(f)
		return
	}
	f.reroutes++
	rt := r.routes.Load()
	hop, ok := rt.nextHop(PeerName(env.dst))
	if PeerName(env.src) != r.name {
		hop, ok = rt.relayHop(PeerName(env.dst)) // relayed: the plain shortest path
	}
	if ok {
		if c := r.connFor(hop); c != nil {
			if c.enqueue(f, int(env.flags&3)%numClasses) == nil {
				r.counters.rerouted.Add(1)
				return
			}
		}
	}
	r.counters.dropNoRoute.Add(1)
	r.pool.put(f)
}
