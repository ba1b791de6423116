package mesh

import (
	"context"
	"crypto/rand"
	"fmt"
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

	mu        sync.Mutex // guards everything below up to conns
	started   bool
	stopped   bool
	topo      *topology
	channels  map[ChannelID]*channel
	subs      map[*routeSub]struct{}
	listener  net.Listener
	advertise []string
	collision *collision

	// conns is the connection table, with its own lock. Changes to the
	// in-use set are made with mu held, so our record and routes follow them
	// in order.
	conns        *connTable
	routes       atomic.Pointer[routeTable]
	channelTable atomic.Pointer[map[ChannelID]*channel]
	bcastSeq     atomic.Uint64
	dedupMu      sync.Mutex
	dedup        map[PeerName]*dedupWindow

	recalcReq   chan struct{} // debounced route recalculation
	selfChanged chan struct{} // our record changed: gossip it
	maker       *connMaker
	throttle    *acceptThrottle
	failures    *failureLog
	counters    routerCounters
	health      localHealth // Lifeguard local health score (liveness.go)

	linkStatsMu sync.Mutex
	linkStats   map[PeerName]*peerLinkStats // cumulative per peer (linkstats.go)
}

type routerCounters struct {
	dropNoRoute, dropQueueFull, dropTTL, dropUnknownChannel, dropDuplicate atomic.Uint64
	forwarded, rerouted, acceptThrottled, handshakeFailures                atomic.Uint64
	routeRecalcs, rejectedRecords                                          atomic.Uint64
	connsLost                                                              atomic.Uint64
	suspicions                                                             atomic.Uint64 // links found silent (liveness.go)
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
		conns:       newConnTable(cfg.Name, cfg.ConnLimit, cfg.MaxPendingHandshakes),
		channels:    map[ChannelID]*channel{},
		subs:        map[*routeSub]struct{}{},
		linkStats:   map[PeerName]*peerLinkStats{},
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
	emptyChannels := map[ChannelID]*channel{}
	r.channelTable.Store(&emptyChannels)
	r.routes.Store(computeRoutes(r.name, r.topo.records, nil))
	r.throttle = newAcceptThrottle(cfg.AcceptRate, cfg.AcceptBurst, cfg.PerIPAcceptRate, cfg.PerIPBurst)
	r.failures = newFailureLog(cfg.AuthFailureBackoff)
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
// ctx bounds only the start itself (see listen); Stop ends the router.
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
		l, err := listen(ctx, r.cfg.Transport, r.cfg.ListenAddr)
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
	r.wg.Add(3)
	go r.maintenanceLoop()
	go r.maker.run()
	go r.livenessLoop()
	r.maker.addSeeds(r.cfg.Seeds...)
	r.log.Info("mesh router started", zap.Uint64("uid", r.uid), zap.Strings("advertise", r.advertise),
		zap.Bool("encrypted", r.psk != nil || r.cfg.EphemeralEncryption || r.cfg.TLS != nil), zap.String("encryption", r.encryption()), zap.String("cluster", r.cfg.ClusterLabel))
	return nil
}

// contextListener is a Transport whose Listen can be bounded by a
// context (TCPTransport: resolving a host name can take long).
type contextListener interface {
	ListenContext(ctx context.Context, address string) (net.Listener, error)
}

// listen opens t's listener within ctx: through ListenContext when t has
// it, and a listener that comes back after ctx ended is closed.
func listen(ctx context.Context, t Transport, address string) (net.Listener, error) {
	var l net.Listener
	var err error
	if cl, ok := t.(contextListener); ok {
		l, err = cl.ListenContext(ctx, address)
	} else {
		l, err = t.Listen(address)
	}
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
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
	conns, pending := r.conns.close()
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

func (r *Router) connFor(p PeerName) *conn { return r.conns.lookup(p) }

// connClosed is called once per connection when it dies.
func (r *Router) connClosed(c *conn, err error) {
	r.mu.Lock()
	out := r.conns.remove(c)
	if now := time.Now(); out.changed && !r.stopped && linkFailed(err) && c.stats.failedAgain(now) {
		// The link failed again: it is degraded for the next connection
		// (which inherits c's quality) and for one already up to the same
		// incarnation, which may have arrived before c was found dead.
		c.quality.failed(now)
		if o := r.conns.lookup(c.remote); o != nil && o.remoteUID == c.remoteUID {
			o.quality.failed(now)
		}
	}
	c.stats.closed(c, out.changed, out.lost && !r.stopped)
	if out.changed {
		r.updateSelfLocked()
		r.recalcLocked()
	}
	stopped := r.stopped
	r.mu.Unlock()
	if out.lost && !stopped {
		r.log.Info("mesh connection lost", zap.String("peer", string(c.remote)), zap.Error(err))
		r.counters.connsLost.Add(1)
		r.counters.lastLossMu.Lock()
		r.counters.lastLoss = append(r.counters.lastLoss, fmt.Sprintf("%s: %v", c.remote, err))
		if len(r.counters.lastLoss) > 8 {
			r.counters.lastLoss = r.counters.lastLoss[1:]
		}
		r.counters.lastLossMu.Unlock()
	}
	if !stopped && !out.addrInUse {
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
