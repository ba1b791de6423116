package mesh

import (
	"fmt"
	"github.com/meshetcd/meshetcd/internal/ring"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// GossipData is a mergeable piece of state (typically a CRDT) carried by a
// gossip channel. Data handed to the router becomes the router's: it may
// Merge other data into it while it waits to be sent, so return copies of
// your internal state, never the state itself.
type GossipData interface {
	// Encode serialises the data into one or more messages, each at most
	// the router's MaxDatagramSize.
	Encode() [][]byte
	// Merge folds other into the receiver and returns the result. It must
	// not modify other.
	Merge(other GossipData) GossipData
}

// Gossiper is the application side of a gossip channel. Its methods run on
// the channel's own delivery goroutine, one at a time, never on a socket
// reader.
type Gossiper interface {
	// OnGossipUnicast receives a message sent to us with GossipUnicast.
	OnGossipUnicast(src PeerName, msg []byte) error
	// OnGossipBroadcast receives a message sent with GossipBroadcast. The
	// router itself forwards the message to the rest of the mesh along the
	// sender's spanning tree, so each peer sees it once.
	OnGossipBroadcast(src PeerName, update []byte) error
	// Gossip returns the complete state, sent periodically to a random
	// neighbour (anti-entropy) and to every new neighbour. nil: nothing.
	Gossip() GossipData
	// OnGossip merges a neighbour's gossip and returns what was new to us
	// (nil if nothing), which the router relays to our neighbours, so news
	// spreads and then stops.
	OnGossip(msg []byte) (delta GossipData, err error)
}

// Reserved channel ids.
const (
	topologyChannel  ChannelID = 1
	firstUserChannel           = 16
)

type deliveryKind uint8

const (
	deliverGossip deliveryKind = iota + 1
	deliverUnicast
	deliverBroadcast
)

type inboundItem struct {
	kind    deliveryKind
	src     PeerName
	f       *frameBuf
	payload []byte
}

// channel is the router-side state of a datagram or gossip channel: a
// bounded inbound queue drained by the channel's own goroutine.
type channel struct {
	id       ChannelID
	name     string
	class    int
	datagram DatagramHandler
	gossiper Gossiper
	inbound  ring.Queue[inboundItem]
	// mergeMu serialises Merge and Encode on this channel's pending data,
	// which may be shared between connections.
	mergeMu sync.Mutex

	delivered, dropped, handlerErrors atomic.Uint64
}

func (r *Router) registerChannel(ch *channel) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrClosed
	}
	if _, dup := r.channels[ch.id]; dup {
		return fmt.Errorf("mesh: channel %d already registered", ch.id)
	}
	ch.inbound.Init(r.cfg.InboundQueueLen)
	channels := make(map[ChannelID]*channel, len(r.channels)+1)
	for k, v := range r.channels {
		channels[k] = v
	}
	channels[ch.id] = ch
	r.channels = channels
	r.channelTable.Store(&channels)
	r.wg.Add(1)
	go r.deliveryLoop(ch)
	return nil
}

func (r *Router) channelByID(id ChannelID) *channel {
	return (*r.channelTable.Load())[id]
}

// deliver queues a received message for its channel without blocking;
// it takes ownership of f.
func (r *Router) deliver(id ChannelID, kind deliveryKind, src PeerName, f *frameBuf, payload []byte) {
	ch := r.channelByID(id)
	if ch == nil {
		r.counters.dropUnknownChannel.Add(1)
		r.pool.put(f)
		return
	}
	if !ch.inbound.Push(inboundItem{kind: kind, src: src, f: f, payload: payload}) {
		ch.dropped.Add(1)
		r.pool.put(f)
	}
}

func (r *Router) deliveryLoop(ch *channel) {
	defer r.wg.Done()
	for {
		it, ok := ch.inbound.Pop()
		if !ok {
			select {
			case <-r.ctx.Done():
				return
			case <-ch.inbound.Ready():
			}
			continue
		}
		if r.ctx.Err() != nil {
			r.pool.put(it.f)
			return
		}
		r.handleInbound(ch, it)
		r.pool.put(it.f)
	}
}

func (r *Router) handleInbound(ch *channel, it inboundItem) {
	ch.delivered.Add(1)
	if ch.datagram != nil {
		if it.kind == deliverUnicast {
			ch.datagram(it.src, it.payload)
		}
		return
	}
	var err error
	switch it.kind {
	case deliverUnicast:
		err = ch.gossiper.OnGossipUnicast(it.src, it.payload)
	case deliverBroadcast:
		err = ch.gossiper.OnGossipBroadcast(it.src, it.payload)
	case deliverGossip:
		if ch.id == topologyChannel {
			err = r.onTopologyMessage(ch, it.src, it.payload)
			break
		}
		var delta GossipData
		delta, err = ch.gossiper.OnGossip(it.payload)
		if err == nil && delta != nil {
			r.gossipToNeighbours(ch, delta, it.src)
		}
	}
	if err != nil {
		ch.handlerErrors.Add(1)
		r.log.Warn("gossip handler failed", zap.String("channel", ch.name), zap.String("src", string(it.src)), zap.Error(err))
	}
}

// DatagramChannel sends best-effort unicast datagrams (Raft messages).
// Delivery is at most once, FIFO per (src, dst) while the route is stable.
type DatagramChannel struct {
	r  *Router
	ch *channel
}

// NewDatagramChannel registers a datagram channel; h receives datagrams
// addressed to us on its own goroutine. id must be ≥ 16.
func (r *Router) NewDatagramChannel(id ChannelID, name string, prio Priority, h DatagramHandler) (*DatagramChannel, error) {
	if id < firstUserChannel {
		return nil, fmt.Errorf("mesh: channel id %d is reserved (use ≥ %d)", id, firstUserChannel)
	}
	if h == nil {
		return nil, fmt.Errorf("mesh: nil datagram handler")
	}
	ch := &channel{id: id, name: name, class: classOf(prio), datagram: h}
	if err := r.registerChannel(ch); err != nil {
		return nil, err
	}
	return &DatagramChannel{r: r, ch: ch}, nil
}

// MaxPayload is the largest payload Send accepts.
func (c *DatagramChannel) MaxPayload() int { return c.r.cfg.MaxDatagramSize }

// Send queues payload for dst and returns at once: ErrNoRoute,
// ErrQueueFull, ErrTooLarge or ErrClosed when it cannot. payload is copied.
func (c *DatagramChannel) Send(dst PeerName, payload []byte) error {
	return c.r.sendUnicast(c.ch, dst, nil, payload)
}

// SendWithHeader is Send of the payload header followed by body, copied
// straight into the frame: a caller that prefixes its own header to a big
// body spares itself a buffer and a copy of the body.
func (c *DatagramChannel) SendWithHeader(dst PeerName, header, body []byte) error {
	return c.r.sendUnicast(c.ch, dst, header, body)
}

// Dropped counts datagrams for this channel dropped on arrival because the
// handler fell behind.
func (c *DatagramChannel) Dropped() uint64 { return c.ch.dropped.Load() }

// GossipChannel is the sending side of a gossip channel.
type GossipChannel struct {
	r  *Router
	ch *channel
}

// NewGossip registers a gossip channel backed by g. id must be ≥ 16.
// Gossip traffic uses the bulk class.
func (r *Router) NewGossip(id ChannelID, name string, g Gossiper) (*GossipChannel, error) {
	if id < firstUserChannel {
		return nil, fmt.Errorf("mesh: channel id %d is reserved (use ≥ %d)", id, firstUserChannel)
	}
	if g == nil {
		return nil, fmt.Errorf("mesh: nil gossiper")
	}
	ch := &channel{id: id, name: name, class: classBulk, gossiper: g}
	if err := r.registerChannel(ch); err != nil {
		return nil, err
	}
	return &GossipChannel{r: r, ch: ch}, nil
}

// GossipUnicast sends msg to dst (routed through relays); it never blocks.
func (g *GossipChannel) GossipUnicast(dst PeerName, msg []byte) error {
	return g.r.sendUnicast(g.ch, dst, nil, msg)
}

// GossipBroadcast sends update to every reachable peer, exactly once each
// while the topology is stable.
func (g *GossipChannel) GossipBroadcast(update GossipData) {
	if update == nil {
		return
	}
	for _, m := range update.Encode() {
		g.r.broadcast(g.ch, m)
	}
}

// GossipNeighbourSubset merges update into what is pending for a random
// subset of our neighbours; they merge it and relay what is new to them.
func (g *GossipChannel) GossipNeighbourSubset(update GossipData) {
	if update == nil {
		return
	}
	g.r.gossipToNeighbours(g.ch, update, "")
}
