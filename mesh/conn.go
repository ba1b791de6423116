package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Send classes, in the order the writer serves them.
const (
	classControl     = 0 // ping, pong, goodbye, topology
	classInteractive = 1
	classBulk        = 2
	numClasses       = 3
)

func classOf(p Priority) int {
	switch p {
	case PriorityInteractive:
		return classInteractive
	default:
		return classBulk
	}
}

var (
	errDeadLink     = errors.New("mesh: link dead (nothing received within the dead timeout)")
	errNoPong       = errors.New("mesh: peer stopped answering pings")
	errRemoteClosed = errors.New("mesh: peer closed the connection")
	errSuperseded   = errors.New("mesh: connection superseded")
	// errGoodbye is a graceful close by the peer (it said goodbye first).
	errGoodbye = fmt.Errorf("%w with a goodbye", errRemoteClosed)
)

// linkFailed reports whether a connection that closed with err failed,
// as opposed to being closed on purpose by either end (a goodbye, a
// superseded duplicate, the router stopping).
func linkFailed(err error) bool {
	return !errors.Is(err, errGoodbye) && !errors.Is(err, errSuperseded) && !errors.Is(err, ErrClosed)
}

// conn is one established, authenticated connection to a neighbour. It
// owns two goroutines: a reader, which decodes frames and hands them on
// without ever blocking on a handler, and a writer, which drains bounded
// per-class queues with write deadlines and sends heartbeats.
type conn struct {
	r           *Router
	nc          net.Conn
	remote      PeerName
	remoteUID   uint64
	remoteNick  string
	remoteAddrs []string
	outbound    bool
	addr        string // the dialled address, or the remote address if inbound
	send, recv  *cipherState
	mode        uint8 // preamble mode: plaintext, PSK or ephemeral encryption
	batch       bool  // version 3: small frames travel in batched records
	since       time.Time

	queues      [numClasses]chan *frameBuf
	queuedBytes atomic.Int64
	wake        chan struct{}

	// pending holds per-channel gossip not yet sent, merged while it waits.
	gossipMu sync.Mutex
	pending  map[ChannelID]GossipData

	done      chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
	goodbye   atomic.Pointer[string] // set: send goodbye with this reason, then close
	closeErr  atomic.Pointer[error]

	lastRecv atomic.Int64 // unix nanos
	lastPong atomic.Int64
	rtt      atomic.Int64 // nanos, EWMA
	// Liveness and link quality (liveness.go, quality.go), written by
	// the writer's checks and the reader's pong handling.
	suspectSince atomic.Int64 // unix nanos; 0: not suspect
	lastFlush    atomic.Int64 // unix nanos of the writer's last completed flush
	quality      linkQuality
	stats        *peerLinkStats // the remote's cumulative figures (linkstats.go)

	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	drops                                  atomic.Uint64
}

func newConn(r *Router, nc net.Conn, hs *handshakeResult, outbound bool, addr string) *conn {
	now := time.Now()
	c := &conn{
		r:           r,
		nc:          nc,
		remote:      hs.remote.name,
		remoteUID:   hs.remote.uid,
		remoteNick:  hs.remote.nickName,
		remoteAddrs: hs.remote.addrs,
		outbound:    outbound,
		addr:        addr,
		send:        hs.send,
		mode:        hs.mode,
		batch:       hs.version >= versionBatchedRecords,
		recv:        hs.recv,
		since:       r.cfg.Clock.Now(),
		wake:        make(chan struct{}, 1),
		pending:     map[ChannelID]GossipData{},
		done:        make(chan struct{}),
		stats:       r.peerStatsFor(hs.remote.name),
	}
	c.queues[classControl] = make(chan *frameBuf, r.cfg.ControlQueueLen)
	c.queues[classInteractive] = make(chan *frameBuf, r.cfg.InteractiveQueueLen)
	c.queues[classBulk] = make(chan *frameBuf, r.cfg.BulkQueueLen)
	c.lastRecv.Store(now.UnixNano())
	c.lastPong.Store(now.UnixNano())
	c.lastFlush.Store(now.UnixNano())
	c.quality.inherit(c.stats.previousQuality(hs.remote.uid))
	return c
}

func (c *conn) start() {
	c.r.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// enqueue queues a frame without blocking. On error the caller still owns f.
func (c *conn) enqueue(f *frameBuf, class int) error {
	if c.closing.Load() {
		return ErrNoRoute
	}
	size := int64(f.n)
	if c.queuedBytes.Add(size) > int64(c.r.cfg.QueueBytes) {
		c.queuedBytes.Add(-size)
		c.drops.Add(1)
		return ErrQueueFull
	}
	select {
	case c.queues[class] <- f:
		c.signal()
		return nil
	default:
		c.queuedBytes.Add(-size)
		c.drops.Add(1)
		return ErrQueueFull
	}
}

// queueGossip merges data into the pending gossip for channel ch.
func (c *conn) queueGossip(ch *channel, data GossipData) {
	if c.closing.Load() {
		return
	}
	ch.mergeMu.Lock()
	c.gossipMu.Lock()
	if old, ok := c.pending[ch.id]; ok {
		c.pending[ch.id] = old.Merge(data)
	} else {
		c.pending[ch.id] = data
	}
	c.gossipMu.Unlock()
	ch.mergeMu.Unlock()
	c.signal()
}

// takeGossip removes and encodes one pending gossip of the given class.
func (c *conn) takeGossip(class int) []*frameBuf {
	c.gossipMu.Lock()
	var id ChannelID
	var data GossipData
	for chID, d := range c.pending {
		ch := c.r.channelByID(chID)
		if ch == nil {
			delete(c.pending, chID)
			continue
		}
		if ch.class == class {
			id, data = chID, d
			delete(c.pending, chID)
			break
		}
	}
	c.gossipMu.Unlock()
	if data == nil {
		return nil
	}
	ch := c.r.channelByID(id)
	ch.mergeMu.Lock()
	msgs := data.Encode()
	ch.mergeMu.Unlock()
	frames := make([]*frameBuf, 0, len(msgs))
	for _, m := range msgs {
		if len(m) > c.r.cfg.MaxDatagramSize {
			c.r.log.Warn("gossip message too large; dropped", zap.Uint16("channel", uint16(id)), zap.Int("bytes", len(m)))
			continue
		}
		frames = append(frames, c.r.newFrame(msgGossip, 1, id, 0, "", class, m))
	}
	return frames
}

// close tears the connection down at once and tells the router.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.closeErr.Store(&err)
		close(c.done)
		_ = c.nc.Close()
		c.r.connClosed(c, err)
	})
}

// closeGracefully sends a goodbye (so the peer reroutes at once instead of
// waiting for the dead timeout) and then closes.
func (c *conn) closeGracefully(reason string) {
	c.goodbye.Store(&reason)
	c.signal()
}

func (c *conn) err() error {
	if p := c.closeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// readLoop reads frames until the connection fails. It never calls
// application code: deliveries go to bounded channel queues, relayed frames
// to the next hop's queue.
func (c *conn) readLoop() {
	defer c.r.wg.Done()
	r := c.r
	lr := newLinkReader(c.nc, c.recv, &r.pool, r.maxFrame+c.recv.overhead(), c.batch)
	for {
		// The router's liveness loop is the primary detector (it knows
		// when our own process was starved, liveness.go); this deadline
		// is the backstop should that loop itself be held up, longer than
		// the loop's own (2 × the health-scaled dead timeout). Frames
		// still packed in an opened record need no read.
		if !lr.pending() {
			if err := c.nc.SetReadDeadline(time.Now().Add(3 * r.cfg.DeadTimeout)); err != nil {
				c.close(err)
				return
			}
		}
		f, n, err := lr.next()
		if err != nil {
			c.close(classifyReadErr(err))
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if c.framesIn.Add(1) == 1 {
			r.firstFrame(c)
		}
		c.bytesIn.Add(uint64(n))
		if err := c.dispatch(f); err != nil {
			c.close(err)
			return
		}
	}
}

func classifyReadErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %v", errDeadLink, err)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %v", errRemoteClosed, err)
	}
	return err
}

// dispatch handles one received frame and takes ownership of f.
func (c *conn) dispatch(f *frameBuf) error {
	r := c.r
	env, err := parseEnvelope(f.envelope())
	if err != nil {
		r.pool.put(f)
		return err
	}
	switch env.typ {
	case msgPing:
		if len(env.payload) != 8 {
			r.pool.put(f)
			return fmt.Errorf("mesh: bad ping")
		}
		pong := r.newFrame(msgPong, 1, 0, 0, "", classControl, env.payload)
		r.pool.put(f)
		if err := c.enqueue(pong, classControl); err != nil {
			r.pool.put(pong)
		}
	case msgPong:
		if len(env.payload) != 8 {
			r.pool.put(f)
			return fmt.Errorf("mesh: bad pong")
		}
		now := time.Now().UnixNano()
		sent := int64(binary.BigEndian.Uint64(env.payload))
		sample := now - sent
		r.pool.put(f)
		c.lastPong.Store(now)
		c.quality.pong(sent, time.Duration(sample))
		if sample > 0 {
			c.stats.observeRTT(time.Duration(sample))
		}
		if sample > 0 {
			old := c.rtt.Load()
			if old == 0 {
				c.rtt.Store(sample)
			} else {
				c.rtt.Store(old + (sample-old)/8)
			}
		}
	case msgGoodbye:
		reason := string(env.payload)
		r.pool.put(f)
		return fmt.Errorf("%w: %s", errGoodbye, reason)
	case msgGossip:
		r.deliver(env.channel, deliverGossip, c.remote, f, env.payload)
	case msgUnicast:
		if string(env.dst) == string(r.name) {
			r.deliver(env.channel, deliverUnicast, PeerName(env.src), f, env.payload)
			return nil
		}
		r.forward(f, env)
	case msgBroadcast:
		r.handleBroadcast(f, env)
	default: // msgHello after the handshake
		r.pool.put(f)
		return fmt.Errorf("mesh: unexpected message type %d", env.typ)
	}
	return nil
}

// writeLoop drains the queues in class order, batching frames into one
// flush under a write deadline, and sends heartbeats.
func (c *conn) writeLoop() {
	defer c.r.wg.Done()
	r := c.r
	bw := newLinkWriter(c.nc, linkWriteBufSize, c.batch)
	ticker := time.NewTicker(r.cfg.HeartbeatInterval)
	defer ticker.Stop()
	nextPing := time.Now()
	bulkTokens := float64(r.bulkBurst)
	lastRefill := time.Now()
	var bulkWait *time.Timer
	scratch := make([]*frameBuf, 0, 8)
	defer func() {
		if bulkWait != nil {
			bulkWait.Stop()
		}
	}()
	for {
		now := time.Now()
		if !now.Before(nextPing) {
			if c.quality.pinged(now.UnixNano(), r.cfg.HeartbeatInterval, r.health.get() > 0) {
				r.requestRecalc() // degraded or healthy again: reconsider routes
			}
			var tok [8]byte
			binary.BigEndian.PutUint64(tok[:], uint64(now.UnixNano()))
			if err := c.enqueue(r.newFrame(msgPing, 1, 0, 0, "", classControl, tok[:]), classControl); err != nil {
				c.drops.Add(1)
			}
			nextPing = now.Add(r.cfg.HeartbeatInterval)
		}
		if reason := c.goodbye.Load(); reason != nil {
			gb := r.newFrame(msgGoodbye, 1, 0, 0, "", classControl, []byte(*reason))
			_ = c.nc.SetWriteDeadline(now.Add(min(r.cfg.WriteTimeout, time.Second)))
			_ = c.writeFrame(bw, gb)
			_ = bw.Flush()
			c.close(fmt.Errorf("%w: %s", errSuperseded, *reason))
			return
		}
		elapsed := now.Sub(lastRefill).Seconds()
		lastRefill = now
		bulkTokens = min(bulkTokens+elapsed*float64(r.cfg.BulkRate), float64(r.bulkBurst))

		if err := c.nc.SetWriteDeadline(now.Add(r.cfg.WriteTimeout)); err != nil {
			c.close(err)
			return
		}
		wrote := 0
		for wrote < 64 {
			frames, class := c.nextFrames(scratch[:0], bulkTokens > 0)
			scratch = frames[:0]
			if len(frames) == 0 {
				break
			}
			for i, f := range frames {
				if class == classBulk {
					bulkTokens -= float64(f.n)
				}
				err := c.writeFrame(bw, f)
				r.pool.put(f)
				if err != nil {
					for _, rest := range frames[i+1:] {
						r.pool.put(rest)
					}
					c.close(fmt.Errorf("mesh: write: %w", err))
					return
				}
				wrote++
			}
		}
		if wrote > 0 || bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				c.close(fmt.Errorf("mesh: write: %w", err))
				return
			}
			c.lastFlush.Store(time.Now().UnixNano())
			if wrote > 0 {
				continue
			}
		}
		var bulkC <-chan time.Time
		if bulkTokens <= 0 && (len(c.queues[classBulk]) > 0 || c.hasPendingGossip()) {
			wait := time.Duration(-bulkTokens/float64(r.cfg.BulkRate)*float64(time.Second)) + time.Millisecond
			if bulkWait == nil {
				bulkWait = time.NewTimer(wait)
			} else {
				bulkWait.Reset(wait)
			}
			bulkC = bulkWait.C
		}
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-ticker.C:
		case <-bulkC:
		}
	}
}

func (c *conn) hasPendingGossip() bool {
	c.gossipMu.Lock()
	defer c.gossipMu.Unlock()
	return len(c.pending) > 0
}

// nextFrames picks the next work in priority order: control frames,
// control-class gossip (topology), interactive frames, then bulk frames and bulk
// gossip while the bulk token bucket allows.
//
// Frames are appended to scratch so the hot path does not allocate.
func (c *conn) nextFrames(scratch []*frameBuf, bulkAllowed bool) ([]*frameBuf, int) {
	select {
	case f := <-c.queues[classControl]:
		c.queuedBytes.Add(-int64(f.n))
		return append(scratch, f), classControl
	default:
	}
	if fs := c.takeGossip(classControl); len(fs) > 0 {
		return append(scratch, fs...), classControl
	}
	select {
	case f := <-c.queues[classInteractive]:
		c.queuedBytes.Add(-int64(f.n))
		return append(scratch, f), classInteractive
	default:
	}
	if !bulkAllowed {
		return scratch, 0
	}
	select {
	case f := <-c.queues[classBulk]:
		c.queuedBytes.Add(-int64(f.n))
		return append(scratch, f), classBulk
	default:
	}
	if fs := c.takeGossip(classBulk); len(fs) > 0 {
		return append(scratch, fs...), classBulk
	}
	return scratch, 0
}

// writeFrame seals f and queues prefix plus body on w.
func (c *conn) writeFrame(w *linkWriter, f *frameBuf) error {
	n, err := w.writeFrame(c.send, f)
	if err != nil {
		return err
	}
	c.framesOut.Add(1)
	c.bytesOut.Add(uint64(n))
	return nil
}

// checkLiveness fails a connection that has gone quiet, or whose peer
// stopped answering our pings (a peer that stopped reading still sends),
// by the rules of judgeLink.
func (c *conn) checkLiveness(now, awakeSince time.Time) error {
	r := c.r
	e := newLinkEvidence(&r.cfg, &r.health, now, awakeSince)
	e.lastRecv = time.Unix(0, c.lastRecv.Load())
	e.lastPong = time.Unix(0, c.lastPong.Load())
	if s := c.suspectSince.Load(); s != 0 {
		e.suspectedSince = time.Unix(0, s)
	}
	if now.Sub(time.Unix(0, c.lastFlush.Load())) > e.suspect {
		// Our writer is stuck in a write (a slow link, or a full buffer):
		// our pings have not left, so missing pongs say nothing.
		e.lastPong = now
	}
	if now.Sub(e.lastRecv) > e.suspect || now.Sub(e.lastPong) > e.suspect {
		e.othersRecv = r.latestRecvExcept(c) // only when suspect: walks the table
	}
	verdict, err := judgeLink(e)
	// A suspect link keeps its connection but routes avoid it like a
	// degraded one (routes.go) until it is confirmed dead or speaks again:
	// traffic moves to a healthy path a heartbeat before the dead timeout.
	switch verdict {
	case linkAlive:
		if c.suspectSince.Swap(0) != 0 {
			r.requestRecalc()
		}
	case linkSuspect:
		if e.suspectedSince.IsZero() {
			c.suspectSince.Store(now.UnixNano())
			r.counters.suspicions.Add(1)
			r.requestRecalc()
		}
	case linkDead:
		return err
	}
	return nil
}

// latestRecvExcept returns the latest frame received on any connection in
// use other than c (zero if there is none): the witness that our own
// receive path works.
func (r *Router) latestRecvExcept(c *conn) time.Time {
	var latest int64
	for _, o := range r.conns.current() {
		if o != c && o.remote != c.remote {
			latest = max(latest, o.lastRecv.Load())
		}
	}
	if latest == 0 {
		return time.Time{}
	}
	return time.Unix(0, latest)
}

// drain empties the queues of a closed connection and returns the frames.
func (c *conn) drain() []*frameBuf {
	var out []*frameBuf
	for class := range c.queues {
		for {
			select {
			case f := <-c.queues[class]:
				c.queuedBytes.Add(-int64(f.n))
				out = append(out, f)
				continue
			default:
			}
			break
		}
	}
	return out
}
