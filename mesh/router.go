package mesh

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Router is one peer of the mesh: it keeps connections to its neighbours,
// gossips the topology, routes unicast and broadcast traffic through
// relays, and runs gossip and datagram channels.
type Router struct {
	cfg      Config
	log      *zap.Logger
	name     PeerName
	uid      uint64
	psk      []byte
	maxFrame int // largest envelope we accept
	// bulkBurst is the bulk token bucket size: one largest frame.
	bulkBurst int
	pool      bufPool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rngMu sync.Mutex
	rng   *mrand.Rand

	mu          sync.Mutex // guards everything below up to the atomics
	started     bool
	stopped     bool
	topo        *topology
	conns       map[PeerName]*conn  // the connection in use per neighbour
	standby     map[PeerName]*conn  // tie-break losers the remote has yet to close
	pendingConn map[net.Conn]string // handshakes in progress → address
	channels    map[ChannelID]*channel
	subs        map[*routeSub]struct{}
	failures    []HandshakeFailure // recent, newest last
	failureLog  map[string]*failureLogState
	replaced    map[PeerName]map[uint64]bool
	listener    net.Listener
	advertise   []string
	collision   *collision

	routes       atomic.Pointer[routeTable]
	connTable    atomic.Pointer[map[PeerName]*conn]
	channelTable atomic.Pointer[map[ChannelID]*channel]
	bcastSeq     atomic.Uint64
	dedupMu      sync.Mutex
	dedup        map[PeerName]*dedupWindow

	recalcReq   chan struct{} // debounced route recalculation
	selfChanged chan struct{} // our record changed: gossip it
	maker       *connMaker
	throttle    *acceptThrottle
	counters    routerCounters
}

type routerCounters struct {
	dropNoRoute, dropQueueFull, dropTTL, dropUnknownChannel, dropDuplicate atomic.Uint64
	forwarded, rerouted, acceptThrottled, handshakeFailures                atomic.Uint64
	routeRecalcs, rejectedRecords                                          atomic.Uint64
	connsLost                                                              atomic.Uint64
	lastLossMu                                                             sync.Mutex
	lastLoss                                                               []string // recent lost connections, for status
}

// New validates cfg, derives the mesh key (Argon2id runs here, once) and
// returns a router that is not yet listening.
func New(cfg Config) (*Router, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	uid, err := randomUint64(rand.Reader)
	if err != nil {
		return nil, err
	}
	if uid == 0 {
		uid = 1
	}
	seed := cfg.RandSeed
	if seed == 0 {
		if seed, err = randomUint64(rand.Reader); err != nil {
			return nil, err
		}
	}
	r := &Router{
		cfg:         cfg,
		log:         cfg.Logger.With(zap.String("mesh_peer", string(cfg.Name))),
		name:        cfg.Name,
		uid:         uid,
		maxFrame:    maxEnvelopeHdr + cfg.MaxDatagramSize,
		rng:         mrand.New(mrand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
		conns:       map[PeerName]*conn{},
		standby:     map[PeerName]*conn{},
		pendingConn: map[net.Conn]string{},
		channels:    map[ChannelID]*channel{},
		subs:        map[*routeSub]struct{}{},
		replaced:    map[PeerName]map[uint64]bool{},
		failureLog:  map[string]*failureLogState{},
		dedup:       map[PeerName]*dedupWindow{},
		recalcReq:   make(chan struct{}, 1),
		selfChanged: make(chan struct{}, 1),
	}
	r.bulkBurst = r.maxFrame
	switch {
	case cfg.PSK != nil:
		r.psk = slices.Clone(cfg.PSK)
	case cfg.Password != "":
		r.psk = stretchPassword(cfg.Password, cfg.ClusterLabel, cfg.KDFTime, cfg.KDFMemoryKiB, cfg.KDFThreads)
	}
	now := cfg.Clock.Now()
	self := &peerRecord{Name: cfg.Name, UID: uid, Version: uint64(now.UnixMilli()), NickName: cfg.NickName}
	// A record cannot list more neighbours than there are peers; our own
	// ConnLimit is a local choice that says nothing about other peers.
	r.topo = newTopology(self, cfg.MaxPeers, cfg.MaxPeers)
	r.bcastSeq.Store(uint64(now.UnixNano()))
	r.ctx, r.cancel = context.WithCancel(context.Background())
	emptyConns := map[PeerName]*conn{}
	r.connTable.Store(&emptyConns)
	emptyChannels := map[ChannelID]*channel{}
	r.channelTable.Store(&emptyChannels)
	r.routes.Store(computeRoutes(r.name, r.topo.records, nil))
	r.throttle = newAcceptThrottle(cfg.AcceptRate, cfg.AcceptBurst, cfg.PerIPAcceptRate, cfg.PerIPBurst)
	r.maker = newConnMaker(r)
	topo := &channel{id: topologyChannel, name: "topology", class: classControl, gossiper: topologyGossiper{r}}
	if err := r.registerChannel(topo); err != nil {
		return nil, err
	}
	return r, nil
}

// Name returns our peer name.
func (r *Router) Name() PeerName { return r.name }

// UID returns our incarnation id, random per New.
func (r *Router) UID() uint64 { return r.uid }

// ListenAddr returns the address the router listens on, once started.
func (r *Router) ListenAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listener == nil {
		return ""
	}
	return r.listener.Addr().String()
}

// Start listens (if ListenAddr is set) and starts connecting to seeds.
// ctx bounds only the start itself; Stop ends the router.
func (r *Router) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrClosed
	}
	if r.started {
		return fmt.Errorf("mesh: router already started")
	}
	if r.cfg.ListenAddr != "" {
		l, err := r.cfg.Transport.Listen(r.cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("mesh: listen on %s: %w", r.cfg.ListenAddr, err)
		}
		r.listener = l
	}
	r.advertise = slices.Clone(r.cfg.AdvertiseAddrs)
	if len(r.advertise) == 0 && r.listener != nil {
		addr := r.listener.Addr().String()
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			// Nobody can dial 0.0.0.0: peers will reach us only through
			// our own dials and their seeds.
			r.log.Warn("mesh listens on an unspecified address and no AdvertiseAddrs are set; other peers cannot discover us",
				zap.String("listen", addr))
		} else {
			r.advertise = []string{addr}
		}
	}
	r.topo.selfRecord().Addrs = slices.Clone(r.advertise)
	r.started = true
	if r.listener != nil {
		r.wg.Add(1)
		go r.acceptLoop(r.listener)
	}
	r.wg.Add(2)
	go r.maintenanceLoop()
	go r.maker.run()
	r.maker.addSeeds(r.cfg.Seeds...)
	r.log.Info("mesh router started", zap.Uint64("uid", r.uid), zap.Strings("advertise", r.advertise),
		zap.Bool("encrypted", r.psk != nil || r.cfg.EphemeralEncryption || r.cfg.TLS != nil), zap.String("encryption", r.encryption()), zap.String("cluster", r.cfg.ClusterLabel))
	return nil
}

// Stop says goodbye to every neighbour, closes every connection and the
// listener, and waits for all the router's goroutines.
func (r *Router) Stop() error {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	conns := make([]*conn, 0, len(r.conns)+len(r.standby))
	for _, c := range r.conns {
		conns = append(conns, c)
	}
	for _, c := range r.standby {
		conns = append(conns, c)
	}
	pending := make([]net.Conn, 0, len(r.pendingConn))
	for nc := range r.pendingConn {
		pending = append(pending, nc)
	}
	l := r.listener
	r.mu.Unlock()

	if l != nil {
		_ = l.Close()
	}
	for _, nc := range pending {
		_ = nc.Close()
	}
	for _, c := range conns {
		c.closeGracefully("peer stopping")
	}
	// Give goodbyes a moment to leave, then cut whatever is left.
	deadline := time.After(300 * time.Millisecond)
	for _, c := range conns {
		select {
		case <-c.done:
		case <-deadline:
		}
	}
	r.cancel()
	for _, c := range conns {
		c.close(ErrClosed)
	}
	r.wg.Wait()
	r.mu.Lock()
	for s := range r.subs {
		s.closeLocked()
	}
	r.mu.Unlock()
	r.log.Info("mesh router stopped")
	return nil
}

// AddSeeds adds addresses to dial and retry forever.
func (r *Router) AddSeeds(addrs ...string) { r.maker.addSeeds(addrs...) }

// Reachable reports whether p is us or has a route.
func (r *Router) Reachable(p PeerName) bool {
	if p == r.name {
		return true
	}
	_, ok := r.routes.Load().nextHop(p)
	return ok
}

func (r *Router) randIntN(n int) int {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.IntN(n)
}

func (r *Router) connFor(p PeerName) *conn { return (*r.connTable.Load())[p] }

// newFrame builds a frame in a pooled buffer.
func (r *Router) newFrame(typ, ttl uint8, ch ChannelID, seq uint64, dst PeerName, class int, payload []byte) *frameBuf {
	src := r.name
	f := r.pool.get(envelopeLen(src, dst, len(payload)))
	h := putEnvelopeHeader(f.b[frameHeaderLen:], typ, ttl, ch, seq, src, dst)
	f.b[frameHeaderLen+1] = uint8(class)
	copy(f.b[frameHeaderLen+h:], payload)
	return f
}

// sendUnicast queues payload for dst on the next hop's connection.
func (r *Router) sendUnicast(ch *channel, dst PeerName, payload []byte) error {
	if len(payload) > r.cfg.MaxDatagramSize {
		return fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, len(payload), r.cfg.MaxDatagramSize)
	}
	if r.ctx.Err() != nil {
		return ErrClosed
	}
	if dst == r.name {
		f := r.newFrame(msgUnicast, 1, ch.id, 0, dst, ch.class, payload)
		r.deliver(ch.id, deliverUnicast, r.name, f, f.envelope()[f.n-len(payload):])
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
	f := r.newFrame(msgUnicast, r.cfg.DefaultTTL, ch.id, 0, dst, ch.class, payload)
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
	hop, ok := r.routes.Load().next[PeerName(env.dst)]
	var c *conn
	if ok {
		c = (*r.connTable.Load())[hop]
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
	table := *r.connTable.Load()
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

// acceptLoop accepts connections, throttled before anything is read.
func (r *Router) acceptLoop(l net.Listener) {
	defer r.wg.Done()
	for {
		nc, err := l.Accept()
		if err != nil {
			if r.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("accept failed", zap.Error(err))
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		host := remoteHost(nc.RemoteAddr())
		if !r.throttle.allow(host, time.Now()) {
			r.counters.acceptThrottled.Add(1)
			_ = nc.Close()
			continue
		}
		if !r.reserveHandshake(nc, nc.RemoteAddr().String()) {
			r.counters.acceptThrottled.Add(1)
			_ = nc.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			_, _ = r.runHandshake(nc, false, nc.RemoteAddr().String())
		}()
	}
}

func remoteHost(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// reserveHandshake counts a handshake against the limits, or refuses it.
func (r *Router) reserveHandshake(nc net.Conn, addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || len(r.pendingConn) >= r.cfg.MaxPendingHandshakes || len(r.conns)+len(r.pendingConn) >= r.cfg.ConnLimit {
		return false
	}
	r.pendingConn[nc] = addr
	return true
}

// runHandshake authenticates nc and installs the connection. nc must have
// been reserved with reserveHandshake.
func (r *Router) runHandshake(nc net.Conn, outbound bool, addr string) (PeerName, error) {
	r.mu.Lock()
	id := localIdentity{name: r.name, uid: r.uid, nickName: r.cfg.NickName, label: r.cfg.ClusterLabel, addrs: r.advertise,
		psk: r.psk, ephemeral: r.cfg.EphemeralEncryption}
	r.mu.Unlock()
	nc, err := r.secureLink(nc, outbound, addr)
	var hs *handshakeResult
	if err == nil {
		if hs, err = handshake(nc, id, r.cfg.HandshakeTimeout); err != nil && r.cfg.TLS != nil {
			err = classifyTLSError(err)
		}
	}
	if err == nil {
		err = r.addConn(nc, hs, outbound, addr)
	} else {
		r.mu.Lock()
		delete(r.pendingConn, nc)
		r.mu.Unlock()
	}
	if err != nil {
		_ = nc.Close()
		if r.ctx.Err() == nil {
			r.recordFailure(addr, outbound, err)
		}
		var name PeerName
		if hs != nil {
			name = hs.remote.name
		}
		return name, err
	}
	return hs.remote.name, nil
}

func (r *Router) recordFailure(addr string, outbound bool, err error) {
	r.counters.handshakeFailures.Add(1)
	dir := "inbound"
	key := remoteHostString(addr) // an inbound address has a fresh port each time
	if outbound {
		dir = "outbound"
		key = addr
	}
	reason := refusalReason(err)
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	r.failures = append(r.failures, HandshakeFailure{Addr: addr, Direction: dir, Reason: reason, Error: err.Error(), Time: now})
	if len(r.failures) > 16 {
		r.failures = r.failures[len(r.failures)-16:]
	}
	// One line per remote and reason per AuthFailureBackoff; the rest go to
	// debug and are counted in the next line.
	key += "\x00" + reason
	lg := r.failureLog[key]
	suppressed := 0
	loud := lg == nil || now.Sub(lg.last) >= r.cfg.AuthFailureBackoff
	if loud {
		if lg != nil {
			suppressed = lg.suppressed
		} else if len(r.failureLog) >= 1024 {
			clear(r.failureLog)
		}
		r.failureLog[key] = &failureLogState{last: now}
	} else {
		lg.suppressed++
	}
	r.mu.Unlock()
	if errors.Is(err, errSelfConnect) {
		return
	}
	msg := "mesh handshake failed"
	level := r.log.Info
	if reason != "" {
		msg = "mesh handshake refused: " + reason
		level = r.log.Error
	}
	if !loud {
		level = r.log.Debug
	}
	fields := []zap.Field{zap.String("addr", addr), zap.String("direction", dir), zap.Error(err)}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed_since_last_report", suppressed))
	}
	if loud && reason != "" && outbound {
		fields = append(fields, zap.Duration("retry_in_at_least", r.cfg.AuthFailureBackoff))
	}
	level(msg, fields...)
}

// failureLogState rate-limits the log lines of failed handshakes.
type failureLogState struct {
	last       time.Time
	suppressed int
}

func remoteHostString(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// addConn installs a freshly authenticated connection, resolving duplicates
// and restarts.
func (r *Router) addConn(nc net.Conn, hs *handshakeResult, outbound bool, addr string) error {
	c := newConn(r, nc, hs, outbound, addr)
	r.mu.Lock()
	delete(r.pendingConn, nc)
	if r.stopped {
		r.mu.Unlock()
		return ErrClosed
	}
	var loser *conn
	duplicate := false
	if old, ok := r.conns[c.remote]; ok {
		switch {
		case old.remoteUID != c.remoteUID:
			if r.replaced[c.remote][c.remoteUID] {
				// An incarnation we already replaced is back: two live peers
				// share the name.
				r.mu.Unlock()
				return fmt.Errorf("%w: %q has two live incarnations (%016x, %016x)", ErrNameCollision, c.remote, c.remoteUID, old.remoteUID)
			}
			if r.replaced[c.remote] == nil {
				r.replaced[c.remote] = map[uint64]bool{}
			}
			r.replaced[c.remote][old.remoteUID] = true
			loser = old
		case keepNew(r.name, old, c):
			loser, duplicate = old, true
		default:
			// c loses the tie-break and is never used for sending.
			standby := r.retireDuplicateLocked(c, old)
			r.mu.Unlock()
			c.start()
			if !standby {
				c.closeGracefully("duplicate connection")
			}
			return nil
		}
	}
	if len(r.conns) >= r.cfg.ConnLimit && loser == nil {
		r.mu.Unlock()
		return fmt.Errorf("mesh: connection limit %d reached", r.cfg.ConnLimit)
	}
	r.conns[c.remote] = c
	closeLoser := loser != nil && !(duplicate && r.retireDuplicateLocked(loser, c))
	r.publishConnsLocked()
	r.updateSelfLocked()
	r.recalcLocked()
	r.mu.Unlock()

	c.start()
	if closeLoser {
		loser.closeGracefully("superseded by a newer connection")
	}
	r.log.Info("mesh connection established", zap.String("peer", string(c.remote)), zap.Uint64("peer_uid", c.remoteUID),
		zap.Bool("outbound", outbound), zap.String("addr", addr), zap.Bool("encrypted", c.send != nil || r.cfg.TLS != nil), zap.String("encryption", linkEncryption(c.nc, c.mode)))
	// A new neighbour gets the complete state of every channel at once.
	for _, ch := range *r.channelTable.Load() {
		if ch.gossiper == nil {
			continue
		}
		if data := ch.gossiper.Gossip(); data != nil {
			c.queueGossip(ch, data)
		}
	}
	r.maker.connected(addr, c.remote)
	return nil
}

// retireDuplicateLocked handles the losing connection of a tie-break: it
// is kept as an unused standby until both ends are surely on the winner,
// so there is never a moment without a usable link. If we dialled the
// loser, we close it once the winner has carried a frame from the remote
// (proof that the remote installed the winner too); if the remote dialled
// it, the remote closes it. A standby is promoted if the winner dies, and
// closed by collectGarbage after HandshakeTimeout + DeadTimeout at the
// latest. It reports whether the loser became a standby.
func (r *Router) retireDuplicateLocked(loser, winner *conn) bool {
	if loser.outbound && winner.framesIn.Load() > 0 {
		return false
	}
	if prev := r.standby[loser.remote]; prev != nil && prev != loser {
		prev.closeGracefully("duplicate connection")
	}
	r.standby[loser.remote] = loser
	return true
}

// firstFrame is called when c receives its first frame: if c is in use and
// we dialled a standby duplicate, the remote now uses c, so the standby
// can go.
func (r *Router) firstFrame(c *conn) {
	r.mu.Lock()
	sb := r.standby[c.remote]
	if r.conns[c.remote] != c || sb == nil || !sb.outbound {
		r.mu.Unlock()
		return
	}
	delete(r.standby, c.remote)
	r.mu.Unlock()
	sb.closeGracefully("duplicate connection")
}

// keepNew is the duplicate tie-break both ends agree on: keep the
// connection dialled by the peer with the lower name; between two from the
// same dialler, keep the older one.
func keepNew(self PeerName, old, cur *conn) bool {
	dialler := func(c *conn) PeerName {
		if c.outbound {
			return self
		}
		return c.remote
	}
	lower := min(self, cur.remote)
	return dialler(old) != lower && dialler(cur) == lower
}

// connClosed is called once per connection when it dies.
func (r *Router) connClosed(c *conn, err error) {
	r.mu.Lock()
	if r.standby[c.remote] == c {
		delete(r.standby, c.remote)
	}
	current := r.conns[c.remote] == c
	if current {
		delete(r.conns, c.remote)
		if sb := r.standby[c.remote]; sb != nil && sb.remoteUID == c.remoteUID && !sb.closing.Load() {
			// The tie-break winner died but the standby is alive: use it.
			delete(r.standby, c.remote)
			r.conns[c.remote] = sb
			current = false
		}
		r.publishConnsLocked()
		r.updateSelfLocked()
		r.recalcLocked()
	}
	stopped := r.stopped
	addrInUse := false
	for _, other := range r.conns {
		addrInUse = addrInUse || other.addr == c.addr
	}
	r.mu.Unlock()
	if current && !stopped {
		r.log.Info("mesh connection lost", zap.String("peer", string(c.remote)), zap.Error(err))
		r.counters.connsLost.Add(1)
		r.counters.lastLossMu.Lock()
		r.counters.lastLoss = append(r.counters.lastLoss, fmt.Sprintf("%s: %v", c.remote, err))
		if len(r.counters.lastLoss) > 8 {
			r.counters.lastLoss = r.counters.lastLoss[1:]
		}
		r.counters.lastLossMu.Unlock()
	}
	if !stopped && !addrInUse {
		r.maker.disconnected(c.addr, c.remote, c.since)
	}
	// Messages still queued get one more chance over another route.
	for _, f := range c.drain() {
		r.reroute(f)
	}
	c.gossipMu.Lock()
	clear(c.pending)
	c.gossipMu.Unlock()
}

// reroute moves a frame from a dead connection to the current route, once.
func (r *Router) reroute(f *frameBuf) {
	env, err := parseEnvelope(f.envelope())
	if err != nil || f.rerouted || r.ctx.Err() != nil || env.typ != msgUnicast {
		r.pool.put(f)
		return
	}
	f.rerouted = true
	if hop, ok := r.routes.Load().next[PeerName(env.dst)]; ok {
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

func (r *Router) publishConnsLocked() {
	table := make(map[PeerName]*conn, len(r.conns))
	for k, v := range r.conns {
		table[k] = v
	}
	r.connTable.Store(&table)
}

// updateSelfLocked rewrites our record from our connections and schedules
// gossip of it if it changed.
func (r *Router) updateSelfLocked() {
	conns := make([]connRecord, 0, len(r.conns))
	for name, c := range r.conns {
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
	direct := make(map[PeerName]uint64, len(r.conns))
	for name, c := range r.conns {
		direct[name] = c.remoteUID
	}
	cur := computeRoutes(r.name, r.topo.records, direct)
	old := r.routes.Swap(cur)
	r.counters.routeRecalcs.Add(1)
	evs := routeEvents(old, cur)
	if len(evs) == 0 {
		return
	}
	for s := range r.subs {
		s.push(evs)
	}
	r.maker.poke()
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
	table := *r.connTable.Load()
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
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sb := range r.standby {
		if time.Since(sb.since) > r.cfg.HandshakeTimeout+r.cfg.DeadTimeout {
			sb.closeGracefully("duplicate connection")
		}
	}
	rt := r.routes.Load()
	removed := r.topo.gc(r.cfg.Clock.Now(),
		func(p PeerName) bool { _, ok := rt.hops[p]; return ok },
		func(p PeerName) bool { _, ok := r.conns[p]; return ok },
		r.cfg.GCGrace, r.cfg.TombstoneTTL)
	if len(removed) > 0 {
		r.log.Info("mesh peers garbage collected", zap.Int("count", len(removed)))
		r.recalcLocked()
	}
}

// encryption is the Status name of our own mode.
func (r *Router) encryption() string {
	if r.cfg.TLS != nil {
		if r.psk != nil {
			return EncryptionTLSPSK
		}
		return EncryptionTLS
	}
	return encryptionKind(localIdentity{psk: r.psk, ephemeral: r.cfg.EphemeralEncryption}.mode())
}
