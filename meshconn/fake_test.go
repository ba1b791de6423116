package meshconn

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshetcd/meshetcd/mesh"
)

// fakeNet is an in-package stand-in for the mesh: channels keyed by
// (peer, channel id), each with a bounded inbox drained by its own
// goroutine, like the router's delivery goroutine. It can drop, truncate,
// corrupt and reorder datagrams and partition peers.
type fakeNet struct {
	t          testing.TB
	maxPayload int
	inboxLen   int

	mu        sync.Mutex
	rng       *rand.Rand
	chans     map[fakeKey]*fakeChan
	loss      float64 // probability a datagram silently vanishes
	truncate  float64 // probability it arrives cut short
	flip      float64 // probability one byte is flipped
	reorder   float64 // probability it is held back behind the next one
	held      map[fakeKey][]fakeDatagram
	cut       map[[2]mesh.PeerName]bool // unordered pairs with no route
	down      map[mesh.PeerName]bool    // peers that vanished
	delivered int
	wg        sync.WaitGroup
}

type fakeKey struct {
	peer mesh.PeerName
	id   mesh.ChannelID
}

type fakeDatagram struct {
	src     mesh.PeerName
	payload []byte
}

type fakeChan struct {
	n     *fakeNet
	key   fakeKey
	h     mesh.DatagramHandler
	inbox chan fakeDatagram
	stop  chan struct{}
	muted atomic.Bool // drops everything: a peer that died silently
}

func newFakeNet(t testing.TB, maxPayload int) *fakeNet {
	n := &fakeNet{
		t:          t,
		maxPayload: maxPayload,
		inboxLen:   1024,
		rng:        rand.New(rand.NewPCG(1, 2)),
		chans:      make(map[fakeKey]*fakeChan),
		held:       make(map[fakeKey][]fakeDatagram),
		cut:        make(map[[2]mesh.PeerName]bool),
		down:       make(map[mesh.PeerName]bool),
	}
	t.Cleanup(n.close)
	return n
}

// opener returns the openFunc for peer's channel id.
func (n *fakeNet) opener(peer mesh.PeerName, id mesh.ChannelID) openFunc {
	return func(h mesh.DatagramHandler) (channel, error) {
		c := &fakeChan{n: n, key: fakeKey{peer, id}, h: h, inbox: make(chan fakeDatagram, n.inboxLen), stop: make(chan struct{})}
		n.mu.Lock()
		old := n.chans[c.key] // a restarted peer takes over the channel
		n.chans[c.key] = c
		n.mu.Unlock()
		if old != nil {
			close(old.stop)
		}
		n.wg.Add(1)
		go c.run()
		return c, nil
	}
}

func (n *fakeNet) reachable(from mesh.PeerName) func(mesh.PeerName) bool {
	return func(to mesh.PeerName) bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		known := false
		for k := range n.chans {
			known = known || k.peer == to
		}
		return known && !n.down[to] && !n.down[from] && !n.cut[pair(from, to)]
	}
}

func pair(a, b mesh.PeerName) [2]mesh.PeerName {
	if a > b {
		a, b = b, a
	}
	return [2]mesh.PeerName{a, b}
}

func (n *fakeNet) setFaults(loss, truncate, flip, reorder float64) {
	n.mu.Lock()
	n.loss, n.truncate, n.flip, n.reorder = loss, truncate, flip, reorder
	n.mu.Unlock()
}

func (n *fakeNet) setCut(a, b mesh.PeerName, cut bool) {
	n.mu.Lock()
	n.cut[pair(a, b)] = cut
	n.mu.Unlock()
}

// kill makes peer vanish: its channels stop and nothing reaches it.
func (n *fakeNet) kill(peer mesh.PeerName) {
	n.mu.Lock()
	n.down[peer] = true
	var stops []*fakeChan
	for k, c := range n.chans {
		if k.peer == peer {
			stops = append(stops, c)
			delete(n.chans, k)
		}
	}
	n.mu.Unlock()
	for _, c := range stops {
		close(c.stop)
	}
}

func (n *fakeNet) close() {
	n.mu.Lock()
	cs := n.chans
	n.chans = map[fakeKey]*fakeChan{}
	n.mu.Unlock()
	for _, c := range cs {
		close(c.stop)
	}
	n.wg.Wait()
}

func (c *fakeChan) MaxPayload() int { return c.n.maxPayload }

func (c *fakeChan) SendWithHeader(dst mesh.PeerName, header, body []byte) error {
	return c.Send(dst, joinDatagram(header, body))
}

// joinDatagram is header‖body in a fresh buffer: what a fake channel's
// SendWithHeader sends.
func joinDatagram(header, body []byte) []byte {
	return append(append(make([]byte, 0, len(header)+len(body)), header...), body...)
}

func (c *fakeChan) Send(dst mesh.PeerName, payload []byte) error {
	n := c.n
	if len(payload) > n.maxPayload {
		return mesh.ErrTooLarge
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[c.key.peer] {
		return mesh.ErrClosed
	}
	key := fakeKey{dst, c.key.id}
	to := n.chans[key]
	if to == nil || n.down[dst] || n.cut[pair(c.key.peer, dst)] {
		return mesh.ErrNoRoute
	}
	p := append([]byte(nil), payload...)
	switch r := n.rng.Float64(); {
	case r < n.loss:
		return nil
	case r < n.loss+n.truncate:
		p = p[:n.rng.IntN(len(p)+1)]
	case r < n.loss+n.truncate+n.flip && len(p) > 0:
		p[n.rng.IntN(len(p))] ^= byte(1 + n.rng.IntN(255))
	case r < n.loss+n.truncate+n.flip+n.reorder:
		n.held[key] = append(n.held[key], fakeDatagram{c.key.peer, p})
		return nil
	}
	batch := append([]fakeDatagram{{c.key.peer, p}}, n.held[key]...)
	delete(n.held, key)
	for i, d := range batch {
		select {
		case to.inbox <- d:
			n.delivered++
		default:
			if i == 0 { // the caller's own datagram; held ones just vanish
				return mesh.ErrQueueFull
			}
		}
	}
	return nil
}

func (c *fakeChan) run() {
	defer c.n.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case d := <-c.inbox:
			if !c.muted.Load() {
				c.h(d.src, d.payload)
			}
		}
	}
}
