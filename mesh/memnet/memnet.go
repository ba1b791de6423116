package memnet

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultBufferSize is the per-direction buffer of a connection, roughly a
// loopback TCP socket's send plus receive buffer.
const DefaultBufferSize = 256 << 10

// Errors returned by connections and dials.
var (
	ErrRefused = fmt.Errorf("memnet: connection refused: %w", syscall.ECONNREFUSED)
	ErrReset   = fmt.Errorf("memnet: connection reset by peer: %w", syscall.ECONNRESET)
	ErrClosed  = net.ErrClosed
)

// Addr is a memnet address, "host:port".
type Addr string

// Network returns "memnet".
func (Addr) Network() string { return "memnet" }

func (a Addr) String() string { return string(a) }

type hostPair struct{ a, b string } // unordered: a <= b

func pairOf(a, b string) hostPair {
	if a > b {
		a, b = b, a
	}
	return hostPair{a, b}
}

type direction struct{ from, to string }

// Network is an in-memory network of hosts. The zero value is not usable;
// call New.
type Network struct {
	bufferSize int

	mu         sync.Mutex
	listeners  map[string]*listener // by address
	nextPort   int
	cut        map[hostPair]bool
	blackholed map[hostPair]bool
	delay      map[direction]time.Duration
	dropRate   map[direction]float64
	stalled    map[string]bool
	readRate   map[string]int // bytes per second, 0 = unlimited
	oneWay     map[direction]bool
	jitter     map[direction]time.Duration
	loss       map[direction]float64
	bandwidth  map[direction]int // bytes per second, 0 = unlimited
	flappers   map[hostPair]*flapper
	endpoints  map[*endpoint]struct{}
	rng        *rand.Rand
	// changed is closed and replaced whenever a fault changes, waking every
	// blocked reader and writer so they re-evaluate the link state.
	changed chan struct{}
}

// Option configures a Network.
type Option func(*Network)

// WithBufferSize sets the per-direction connection buffer in bytes.
func WithBufferSize(n int) Option { return func(nw *Network) { nw.bufferSize = n } }

// WithSeed makes random drops reproducible.
func WithSeed(seed uint64) Option {
	return func(nw *Network) { nw.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// New returns an empty network.
func New(opts ...Option) *Network {
	nw := &Network{
		bufferSize: DefaultBufferSize,
		listeners:  map[string]*listener{},
		nextPort:   10000,
		cut:        map[hostPair]bool{},
		blackholed: map[hostPair]bool{},
		delay:      map[direction]time.Duration{},
		dropRate:   map[direction]float64{},
		stalled:    map[string]bool{},
		readRate:   map[string]int{},
		oneWay:     map[direction]bool{},
		jitter:     map[direction]time.Duration{},
		loss:       map[direction]float64{},
		bandwidth:  map[direction]int{},
		flappers:   map[hostPair]*flapper{},
		endpoints:  map[*endpoint]struct{}{},
		rng:        rand.New(rand.NewPCG(1, 2)),
		changed:    make(chan struct{}),
	}
	for _, o := range opts {
		o(nw)
	}
	return nw
}

// Host returns the named host's view of the network. Hosts need not be
// declared; a name is a host.
func (nw *Network) Host(name string) *Host { return &Host{nw: nw, name: name} }

// notifyLocked wakes all waiters; nw.mu must be held.
func (nw *Network) notifyLocked() {
	close(nw.changed)
	nw.changed = make(chan struct{})
}

// Cut resets all connections between hosts a and b and refuses new dials
// until Heal.
func (nw *Network) Cut(a, b string) {
	nw.mu.Lock()
	nw.cut[pairOf(a, b)] = true
	var victims []*endpoint
	for ep := range nw.endpoints {
		if pairOf(ep.localHost, ep.remoteHost) == pairOf(a, b) {
			victims = append(victims, ep)
		}
	}
	nw.notifyLocked()
	nw.mu.Unlock()
	for _, ep := range victims {
		ep.reset()
	}
}

// Blackhole silently stops delivery between hosts a and b in both
// directions; dials between them hang until their context ends.
func (nw *Network) Blackhole(a, b string) {
	nw.mu.Lock()
	nw.blackholed[pairOf(a, b)] = true
	nw.notifyLocked()
	nw.mu.Unlock()
}

// Heal removes Cut, Blackhole and Flap faults between a and b.
func (nw *Network) Heal(a, b string) {
	nw.stopFlap(pairOf(a, b))
	nw.mu.Lock()
	delete(nw.cut, pairOf(a, b))
	delete(nw.blackholed, pairOf(a, b))
	nw.notifyLocked()
	nw.mu.Unlock()
}

// Partition cuts every pair of hosts that are in different groups. Hosts in
// no group are unaffected.
func (nw *Network) Partition(groups ...[]string) {
	for i := range groups {
		for j := i + 1; j < len(groups); j++ {
			for _, a := range groups[i] {
				for _, b := range groups[j] {
					nw.Cut(a, b)
				}
			}
		}
	}
}

// HealAll removes every fault of every kind and stops every flapping link.
func (nw *Network) HealAll() {
	nw.stopAllFlaps()
	nw.mu.Lock()
	nw.cut = map[hostPair]bool{}
	nw.blackholed = map[hostPair]bool{}
	nw.delay = map[direction]time.Duration{}
	nw.dropRate = map[direction]float64{}
	nw.stalled = map[string]bool{}
	nw.readRate = map[string]int{}
	nw.oneWay = map[direction]bool{}
	nw.jitter = map[direction]time.Duration{}
	nw.loss = map[direction]float64{}
	nw.bandwidth = map[direction]int{}
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetDelay delays data sent from host from to host to by d (0 removes it).
func (nw *Network) SetDelay(from, to string, d time.Duration) {
	nw.mu.Lock()
	nw.delay[direction{from, to}] = d
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetDropRate discards each write from host from to host to with
// probability p (0 removes the fault).
func (nw *Network) SetDropRate(from, to string, p float64) {
	nw.mu.Lock()
	nw.dropRate[direction{from, to}] = p
	nw.notifyLocked()
	nw.mu.Unlock()
}

// StallReads makes every read on host's connections block (stalled=true)
// until called again with false: a peer that stopped reading.
func (nw *Network) StallReads(host string, stalled bool) {
	nw.mu.Lock()
	nw.stalled[host] = stalled
	nw.notifyLocked()
	nw.mu.Unlock()
}

// SetReadRate limits each read on host's connections to about bytesPerSec
// (0 removes the limit): a slow reader.
func (nw *Network) SetReadRate(host string, bytesPerSec int) {
	nw.mu.Lock()
	nw.readRate[host] = bytesPerSec
	nw.notifyLocked()
	nw.mu.Unlock()
}

// Host is one host's view: it listens and dials as that host.
type Host struct {
	nw   *Network
	name string
}

// Name returns the host name.
func (h *Host) Name() string { return h.name }

// Listen listens on address "host:port". The host part is ignored (the
// listener belongs to h); port 0 or an empty address picks a free port.
func (h *Host) Listen(address string) (net.Listener, error) {
	port := "0"
	if address != "" {
		i := strings.LastIndexByte(address, ':')
		if i < 0 {
			return nil, fmt.Errorf("memnet: listen %q: missing port", address)
		}
		port = address[i+1:]
	}
	nw := h.nw
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if port == "0" || port == "" {
		nw.nextPort++
		port = strconv.Itoa(nw.nextPort)
	}
	addr := h.name + ":" + port
	if _, busy := nw.listeners[addr]; busy {
		return nil, fmt.Errorf("memnet: listen %s: %w", addr, syscall.EADDRINUSE)
	}
	l := &listener{nw: nw, host: h.name, addr: Addr(addr), backlog: make(chan *endpoint, 128), closed: make(chan struct{})}
	nw.listeners[addr] = l
	return l, nil
}

// Dial connects to a listener's address. It fails at once if the link is
// cut or nobody listens, and hangs until ctx ends if the link is blackholed.
func (h *Host) Dial(ctx context.Context, address string) (net.Conn, error) {
	nw := h.nw
	for {
		nw.mu.Lock()
		l := nw.listeners[address]
		if l == nil {
			nw.mu.Unlock()
			return nil, fmt.Errorf("memnet: dial %s: %w", address, ErrRefused)
		}
		pair := pairOf(h.name, l.host)
		if nw.cut[pair] {
			nw.mu.Unlock()
			return nil, fmt.Errorf("memnet: dial %s: %w", address, ErrRefused)
		}
		if nw.blackholed[pair] || nw.oneWay[direction{h.name, l.host}] || nw.oneWay[direction{l.host, h.name}] {
			changed := nw.changed
			nw.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("memnet: dial %s: %w", address, ctx.Err())
			case <-changed:
				continue
			}
		}
		nw.nextPort++
		local := Addr(h.name + ":" + strconv.Itoa(nw.nextPort))
		ab := newPipe(nw.bufferSize)
		ba := newPipe(nw.bufferSize)
		client := &endpoint{nw: nw, localAddr: local, remoteAddr: l.addr, localHost: h.name, remoteHost: l.host, in: ba, out: ab}
		server := &endpoint{nw: nw, localAddr: l.addr, remoteAddr: local, localHost: l.host, remoteHost: h.name, in: ab, out: ba}
		client.init()
		server.init()
		select {
		case l.backlog <- server:
		default:
			nw.mu.Unlock()
			return nil, fmt.Errorf("memnet: dial %s: backlog full: %w", address, ErrRefused)
		}
		nw.endpoints[client] = struct{}{}
		nw.endpoints[server] = struct{}{}
		nw.mu.Unlock()
		return client, nil
	}
}

type listener struct {
	nw        *Network
	host      string
	addr      Addr
	backlog   chan *endpoint
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case ep := <-l.backlog:
		return ep, nil
	case <-l.closed:
		return nil, fmt.Errorf("memnet: accept on %s: %w", l.addr, net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		l.nw.mu.Lock()
		delete(l.nw.listeners, string(l.addr))
		l.nw.mu.Unlock()
		close(l.closed)
		// Connections still in the backlog were never accepted: refuse them.
		for {
			select {
			case ep := <-l.backlog:
				ep.reset()
			default:
				return
			}
		}
	})
	return nil
}

func (l *listener) Addr() net.Addr { return l.addr }

// pipe is one direction of a connection: a bounded ring of bytes that
// grows on demand up to its capacity, so writes copy without allocating.
type pipe struct {
	mu       sync.Mutex
	buf      []byte // ring; len(buf) <= capacity
	head     int    // read position in buf
	size     int    // buffered bytes
	capacity int
	written  uint64 // bytes ever written
	read     uint64 // bytes ever read
	// marks hold back delayed bytes: bytes [start, end) become readable at
	// at, and nothing behind them may overtake them (it is a stream).
	marks    []mark
	freeAt   time.Time // bandwidth limit: when the link finishes sending what it has
	eof      bool      // writer closed: reader gets EOF after draining
	gone     bool      // reader closed: writer gets EPIPE
	broken   bool      // reset: both sides get ErrReset
	readable chan struct{}
	writable chan struct{}
}

// readableAtLocked returns when n bytes written now become readable under
// the faults lf (zero: at once). A bandwidth limit serialises the
// direction: the bytes leave when the link is free and take n/bandwidth.
func (p *pipe) readableAtLocked(now time.Time, n int, lf linkFaults) time.Time {
	at := now
	if lf.bandwidth > 0 {
		start := now
		if p.freeAt.After(start) {
			start = p.freeAt
		}
		p.freeAt = start.Add(time.Duration(n) * time.Second / time.Duration(lf.bandwidth))
		at = p.freeAt
	}
	if lf.hold <= 0 && lf.bandwidth <= 0 {
		return time.Time{}
	}
	return at.Add(lf.hold)
}

type mark struct {
	start, end uint64
	at         time.Time
}

func newPipe(capacity int) *pipe {
	return &pipe{capacity: capacity, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

// notify wakes one waiter; a woken waiter passes the wake-up on if there
// is more for others.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// availableLocked returns how many bytes may be read now and, if delayed
// bytes are held back, when the next ones become readable.
func (p *pipe) availableLocked(now time.Time) (int, time.Time) {
	limit := p.written
	for len(p.marks) > 0 && p.marks[0].end <= p.read {
		p.marks = p.marks[1:]
	}
	for _, m := range p.marks {
		if m.at.After(now) {
			return int(m.start - p.read), m.at
		}
	}
	return int(limit - p.read), time.Time{}
}

// growLocked makes room in the ring for need buffered bytes.
func (p *pipe) growLocked(need int) {
	if len(p.buf) >= need {
		return
	}
	n := max(4096, len(p.buf))
	for n < need {
		n *= 2
	}
	n = min(n, p.capacity)
	nb := make([]byte, n)
	p.copyOutLocked(nb[:p.size], false)
	p.buf, p.head = nb, 0
}

// copyOutLocked copies the first len(dst) buffered bytes into dst and, if
// consume, removes them.
func (p *pipe) copyOutLocked(dst []byte, consume bool) {
	n := len(dst)
	first := min(n, len(p.buf)-p.head)
	copy(dst, p.buf[p.head:p.head+first])
	copy(dst[first:], p.buf[:n-first])
	if consume {
		p.head = (p.head + n) % len(p.buf)
		p.size -= n
		p.read += uint64(n)
	}
}

// copyInLocked appends src to the ring, which must have room.
func (p *pipe) copyInLocked(src []byte) {
	tail := (p.head + p.size) % len(p.buf)
	first := min(len(src), len(p.buf)-tail)
	copy(p.buf[tail:], src[:first])
	copy(p.buf, src[first:])
	p.size += len(src)
	p.written += uint64(len(src))
}

type endpoint struct {
	nw                    *Network
	localAddr, remoteAddr Addr
	localHost, remoteHost string
	in, out               *pipe
	readDeadline          deadline
	writeDeadline         deadline
	closeOnce             sync.Once
}

func (ep *endpoint) init() {
	ep.readDeadline.init()
	ep.writeDeadline.init()
}

// linkFaults are the faults that apply to one read or write of an endpoint.
type linkFaults struct {
	// Reads: nothing is delivered (a blackhole, or the remote's direction
	// to us dropped), or the local host's reads stall or are rate limited.
	blackholed, stalled bool
	readRate            int
	// Writes: drop corrupts the stream by discarding the write; hold is
	// how long the write's bytes stay unreadable (delay, jitter and
	// retransmissions of a lossy link); bandwidth paces the direction.
	drop      bool
	hold      time.Duration
	bandwidth int
	changed   chan struct{}
}

// linkState reports the faults that apply to reads or writes of ep now,
// drawing the random ones (drop, jitter, loss) for one operation.
func (ep *endpoint) linkState() linkFaults {
	nw := ep.nw
	nw.mu.Lock()
	defer nw.mu.Unlock()
	out := direction{ep.localHost, ep.remoteHost}
	f := linkFaults{
		blackholed: nw.blackholed[pairOf(ep.localHost, ep.remoteHost)] || nw.oneWay[direction{ep.remoteHost, ep.localHost}],
		stalled:    nw.stalled[ep.localHost],
		readRate:   nw.readRate[ep.localHost],
		hold:       nw.delay[out],
		bandwidth:  nw.bandwidth[out],
		changed:    nw.changed,
	}
	if p := nw.dropRate[out]; p > 0 {
		f.drop = nw.rng.Float64() < p
	}
	if j := nw.jitter[out]; j > 0 {
		f.hold += time.Duration(nw.rng.Int64N(int64(j)))
	}
	if p := nw.loss[out]; p > 0 {
		// Each lost transmission costs a retransmission timeout, doubling
		// like TCP's backoff; bytes behind wait (head-of-line blocking).
		rto := LossRTO
		for try := 0; try < maxRetransmits && nw.rng.Float64() < p; try++ {
			f.hold += rto
			rto *= 2
		}
	}
	return f
}

func (ep *endpoint) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p := ep.in
	for {
		lf := ep.linkState()
		blackholed, stalled, readRate, changed := lf.blackholed, lf.stalled, lf.readRate, lf.changed
		p.mu.Lock()
		if p.broken || p.gone {
			err := ErrReset
			if !p.broken {
				err = ErrClosed
			}
			notify(p.readable)
			p.mu.Unlock()
			return 0, err
		}
		now := time.Now()
		avail, nextAt := p.availableLocked(now)
		if !blackholed && !stalled && avail > 0 {
			n := min(len(b), avail)
			if readRate > 0 {
				n = min(n, max(1, readRate/100))
			}
			p.copyOutLocked(b[:n], true)
			if avail > n {
				notify(p.readable)
			}
			notify(p.writable)
			p.mu.Unlock()
			if readRate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(readRate))
			}
			return n, nil
		}
		if p.eof && p.size == 0 {
			notify(p.readable)
			p.mu.Unlock()
			return 0, io.EOF
		}
		p.mu.Unlock()
		var retry <-chan time.Time
		var retryTimer *time.Timer
		if !nextAt.IsZero() && !blackholed && !stalled {
			retryTimer = time.NewTimer(nextAt.Sub(now))
			retry = retryTimer.C
		}
		timedOut := false
		select {
		case <-p.readable:
		case <-changed:
		case <-retry:
		case <-ep.readDeadline.wait():
			timedOut = true
		}
		if retryTimer != nil {
			retryTimer.Stop()
		}
		if timedOut {
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (ep *endpoint) Write(b []byte) (int, error) {
	p := ep.out
	written := 0
	for {
		lf := ep.linkState()
		drop, changed := lf.drop, lf.changed
		p.mu.Lock()
		switch {
		case p.broken:
			notify(p.writable)
			p.mu.Unlock()
			return written, ErrReset
		case p.eof:
			notify(p.writable)
			p.mu.Unlock()
			return written, ErrClosed
		case p.gone:
			notify(p.writable)
			p.mu.Unlock()
			return written, fmt.Errorf("memnet: write: %w", syscall.EPIPE)
		}
		if drop && written == 0 {
			p.mu.Unlock()
			return len(b), nil
		}
		if space := p.capacity - p.size; space > 0 && written < len(b) {
			n := min(space, len(b)-written)
			p.growLocked(p.size + n)
			p.copyInLocked(b[written : written+n])
			if at := p.readableAtLocked(time.Now(), n, lf); !at.IsZero() {
				p.marks = append(p.marks, mark{start: p.written - uint64(n), end: p.written, at: at})
			}
			written += n
			notify(p.readable)
		}
		if written == len(b) {
			if p.size < p.capacity {
				notify(p.writable) // pass the wake-up on to another writer
			}
			p.mu.Unlock()
			return written, nil
		}
		p.mu.Unlock()
		select {
		case <-p.writable:
		case <-changed:
		case <-ep.writeDeadline.wait():
			return written, os.ErrDeadlineExceeded
		}
	}
}

// Close closes this end: the peer reads EOF after the buffered data, and
// its writes fail.
func (ep *endpoint) Close() error {
	ep.closeOnce.Do(func() {
		ep.out.mu.Lock()
		ep.out.eof = true
		notify(ep.out.readable)
		notify(ep.out.writable)
		ep.out.mu.Unlock()
		ep.in.mu.Lock()
		ep.in.gone = true
		notify(ep.in.readable)
		notify(ep.in.writable)
		ep.in.mu.Unlock()
		ep.nw.mu.Lock()
		delete(ep.nw.endpoints, ep)
		ep.nw.mu.Unlock()
	})
	return nil
}

// reset breaks both directions, as a TCP RST would.
func (ep *endpoint) reset() {
	for _, p := range []*pipe{ep.in, ep.out} {
		p.mu.Lock()
		p.broken = true
		notify(p.readable)
		notify(p.writable)
		p.mu.Unlock()
	}
	ep.nw.mu.Lock()
	delete(ep.nw.endpoints, ep)
	ep.nw.mu.Unlock()
}

func (ep *endpoint) LocalAddr() net.Addr  { return ep.localAddr }
func (ep *endpoint) RemoteAddr() net.Addr { return ep.remoteAddr }

func (ep *endpoint) SetDeadline(t time.Time) error {
	ep.readDeadline.set(t)
	ep.writeDeadline.set(t)
	return nil
}
func (ep *endpoint) SetReadDeadline(t time.Time) error  { ep.readDeadline.set(t); return nil }
func (ep *endpoint) SetWriteDeadline(t time.Time) error { ep.writeDeadline.set(t); return nil }

// deadline is a settable deadline whose expiry closes a channel, so blocked
// operations can select on it.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	expired chan struct{}
}

func (d *deadline) init() { d.expired = make(chan struct{}) }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expired // the timer fired (or is firing); wait until it closed the channel
	}
	d.timer = nil
	select {
	case <-d.expired:
		d.expired = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur > 0 {
		expired := d.expired
		d.timer = time.AfterFunc(dur, func() { close(expired) })
		return
	}
	close(d.expired)
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}
