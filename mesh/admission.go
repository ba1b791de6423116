package mesh

import (
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Admission: inbound connections pass the accept throttle and the
// handshake limits of the connection table before a byte is read; every
// handshake (inbound or dialled by the connection maker) is authenticated,
// then installed in the connection table. Failed handshakes are counted,
// kept for Status and logged, rate-limited per remote and reason.

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
		host := remoteHost(nc.RemoteAddr().String())
		if !r.throttle.allow(host, r.cfg.Clock.Now()) {
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

// reserveHandshake counts a handshake against the limits, or refuses it.
func (r *Router) reserveHandshake(nc net.Conn, addr string) bool {
	return r.conns.reserve(nc, addr)
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
		r.conns.release(nc)
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

// recordFailure counts, keeps and logs a failed handshake; refusals at
// error level, once per remote and reason per AuthFailureBackoff.
func (r *Router) recordFailure(addr string, outbound bool, err error) {
	r.counters.handshakeFailures.Add(1)
	dir := "inbound"
	remote := remoteHost(addr) // an inbound address has a fresh port each time
	if outbound {
		dir = "outbound"
		remote = addr
	}
	reason := refusalReason(err)
	loud, suppressed := r.failures.record(HandshakeFailure{Addr: addr, Direction: dir, Reason: reason, Error: err.Error(), Time: r.cfg.Clock.Now()}, remote)
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

// failureLog keeps the most recent failed handshakes for Status and
// rate-limits their log lines: one per remote and reason per interval,
// the rest go to debug and are counted in the next line.
type failureLog struct {
	interval time.Duration

	mu     sync.Mutex
	recent []HandshakeFailure // newest last
	lines  map[string]*failureLogState
}

// failureLogState is the last loud line of one remote and reason.
type failureLogState struct {
	last       time.Time
	suppressed int
}

// Bounds of the failure log.
const (
	recentFailures  = 16
	maxFailureLines = 1024
)

func newFailureLog(interval time.Duration) *failureLog {
	return &failureLog{interval: interval, lines: map[string]*failureLogState{}}
}

// record keeps f and reports whether its log line should be loud, and
// how many quiet ones for the same remote and reason came before it.
func (l *failureLog) record(f HandshakeFailure, remote string) (loud bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recent = append(l.recent, f)
	if len(l.recent) > recentFailures {
		l.recent = l.recent[len(l.recent)-recentFailures:]
	}
	key := remote + "\x00" + f.Reason
	st := l.lines[key]
	loud = st == nil || f.Time.Sub(st.last) >= l.interval
	if !loud {
		st.suppressed++
		return false, 0
	}
	if st != nil {
		suppressed = st.suppressed
	} else if len(l.lines) >= maxFailureLines {
		clear(l.lines)
	}
	l.lines[key] = &failureLogState{last: f.Time}
	return true, suppressed
}

// snapshot returns the kept failures, newest last.
func (l *failureLog) snapshot() []HandshakeFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recent)
}

func remoteHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// addConn installs a freshly authenticated connection: the connection
// table decides between duplicates and restarts, the router acts on it.
func (r *Router) addConn(nc net.Conn, hs *handshakeResult, outbound bool, addr string) error {
	c := newConn(r, nc, hs, outbound, addr)
	r.mu.Lock()
	out, err := r.conns.add(c)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	if out.inUse {
		r.updateSelfLocked()
		r.recalcLocked()
	}
	r.mu.Unlock()

	c.start()
	for _, rt := range out.retire {
		rt.c.closeGracefully(rt.reason)
	}
	if !out.inUse {
		return nil
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

// firstFrame is called when c receives its first frame: a standby
// duplicate we dialled can go once the remote uses c.
func (r *Router) firstFrame(c *conn) {
	if sb := r.conns.firstFrame(c); sb != nil {
		sb.closeGracefully("duplicate connection")
	}
}

// acceptThrottle is a global token bucket plus one per remote host, so a
// connect flood (or online password guessing) cannot swamp the router.
type acceptThrottle struct {
	mu         sync.Mutex
	global     tokenBucket
	perHost    map[string]*tokenBucket
	hostRate   float64
	hostBurst  float64
	maxTracked int
}

func newAcceptThrottle(rate, burst, hostRate, hostBurst float64) *acceptThrottle {
	return &acceptThrottle{
		global:     tokenBucket{rate: rate, burst: burst, tokens: burst},
		perHost:    map[string]*tokenBucket{},
		hostRate:   hostRate,
		hostBurst:  hostBurst,
		maxTracked: 4096,
	}
}

func (a *acceptThrottle) allow(host string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.perHost[host]
	if !ok {
		if len(a.perHost) >= a.maxTracked {
			clear(a.perHost) // forgetting buckets only makes us more lenient
		}
		b = &tokenBucket{rate: a.hostRate, burst: a.hostBurst, tokens: a.hostBurst, last: now}
		a.perHost[host] = b
	}
	if !b.take(now) {
		return false
	}
	return a.global.take(now)
}

type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
