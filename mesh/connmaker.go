package mesh

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// target is an address we may dial: a seed (retried forever) or one
// discovered from a peer's advertised addresses.
type target struct {
	addr      string
	seed      bool
	peer      PeerName // last peer seen at this address
	attempts  int
	nextTry   time.Time
	dialling  bool
	connected bool
	self      bool // our own address: never dial
	lastErr   string
	lastSeen  time.Time // discovery: when a record last advertised it
	stale     bool      // only known from a tombstone
	// refusedUntil: the address refused us for a reason retrying soon
	// cannot fix (secret, label, encryption mode, version, name); no dial,
	// seed reset or later error brings the next try before it.
	refusedUntil time.Time
	reason       string // refusalReason of the last failure
}

// connMaker keeps us connected: seeds forever with jittered exponential
// backoff, plus addresses advertised in the topology, within ConnLimit and
// MaxPendingHandshakes.
type connMaker struct {
	r       *Router
	mu      sync.Mutex
	targets map[string]*target
	wake    chan struct{}
	alone   bool // at the last step we had no connection
}

func newConnMaker(r *Router) *connMaker {
	return &connMaker{r: r, targets: map[string]*target{}, wake: make(chan struct{}, 1)}
}

func (m *connMaker) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *connMaker) addSeeds(addrs ...string) {
	m.mu.Lock()
	for _, a := range addrs {
		if a == "" {
			continue
		}
		t, ok := m.targets[a]
		if !ok {
			t = &target{addr: a}
			m.targets[a] = t
		}
		t.seed = true
		t.stale = false
	}
	m.mu.Unlock()
	m.poke()
}

func (m *connMaker) run() {
	r := m.r
	defer r.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-timer.C:
		case <-m.wake:
		}
		next := m.step(r.cfg.Clock.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// step refreshes the target list from the topology, starts due dials and
// returns how long to sleep.
func (m *connMaker) step(now time.Time) time.Duration {
	r := m.r
	inUse := r.conns.current()
	connected := make(map[PeerName]bool, len(inUse))
	for n := range inUse {
		connected[n] = true
	}
	handshakes := r.conns.handshakes()
	budget := min(r.cfg.ConnLimit-len(inUse)-handshakes, r.cfg.MaxPendingHandshakes-handshakes)
	r.mu.Lock()
	known := len(r.topo.records) - 1
	wantMore := known <= r.cfg.FullMeshThreshold || len(inUse) < r.cfg.Degree
	own := map[string]bool{}
	for _, a := range r.advertise {
		own[a] = true
	}
	type adv struct {
		peer  PeerName
		addrs []string
		stale bool
	}
	var advs []adv
	for name, rec := range r.topo.records {
		if name != r.name {
			advs = append(advs, adv{name, rec.Addrs, false})
		}
	}
	for name, ts := range r.topo.tombstones {
		advs = append(advs, adv{name, ts.Addrs, true})
	}
	alone := len(inUse) == 0
	r.mu.Unlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range advs {
		for _, addr := range a.addrs {
			if own[addr] {
				continue
			}
			t, ok := m.targets[addr]
			if !ok {
				t = &target{addr: addr}
				m.targets[addr] = t
			}
			t.peer = a.peer
			if !a.stale {
				t.lastSeen = now
				t.stale = false
			} else if t.lastSeen.IsZero() {
				t.stale = true
			}
		}
	}
	wait := time.Second
	addrs := make([]string, 0, len(m.targets))
	for a := range m.targets {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	// A peer that has just become alone retries its seeds at once (once
	// per transition, not at every step: a seed that is down or refusing
	// must not turn into a dial loop); while alone, seed backoff is capped
	// at aloneBackoffMax (see backoff).
	becameAlone := alone && !m.alone
	m.alone = alone
	for _, addr := range addrs {
		t := m.targets[addr]
		// Forget discovered addresses nobody has advertised for a while.
		if !t.seed && !t.dialling && !t.connected && now.Sub(t.lastSeen) > r.cfg.TombstoneTTL && !t.stale {
			delete(m.targets, addr)
			continue
		}
		if t.self || own[addr] || t.dialling || t.connected {
			continue
		}
		if t.peer != "" && connected[t.peer] {
			continue
		}
		if !t.seed && !wantMore {
			continue
		}
		if becameAlone && t.seed && t.attempts > 0 && now.After(t.refusedUntil) {
			t.nextTry = now
		}
		if d := t.nextTry.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		if budget <= 0 {
			wait = min(wait, 100*time.Millisecond)
			continue
		}
		budget--
		t.dialling = true
		r.wg.Add(1)
		go m.dial(t.addr)
	}
	return max(wait, 10*time.Millisecond)
}

// dial connects to addr and runs the handshake.
func (m *connMaker) dial(addr string) {
	r := m.r
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.DialTimeout)
	nc, err := r.cfg.Transport.Dial(ctx, addr)
	cancel()
	var peer PeerName
	if err == nil {
		if !r.reserveHandshake(nc, addr) {
			_ = nc.Close()
			m.mu.Lock()
			if t := m.targets[addr]; t != nil {
				t.dialling = false
				t.nextTry = r.cfg.Clock.Now().Add(100 * time.Millisecond)
			}
			m.mu.Unlock()
			return
		}
		peer, err = r.runHandshake(nc, true, addr)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.targets[addr]
	if t == nil {
		return
	}
	t.dialling = false
	if peer != "" {
		t.peer = peer
	}
	if err == nil {
		return // connected() already marked it
	}
	t.lastErr = err.Error()
	t.reason = refusalReason(err)
	if errors.Is(err, errSelfConnect) {
		t.self = true
		return
	}
	t.attempts++
	now := r.cfg.Clock.Now()
	t.nextTry = now.Add(m.backoff(t, err))
	if isRefusal(err) {
		t.refusedUntil = t.nextTry
	}
	t.nextTry = maxTime(t.nextTry, t.refusedUntil)
	m.poke()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// isRefusal reports an error that retrying soon cannot fix: the remote is
// a mesh peer that will not have us (or we it) as configured.
func isRefusal(err error) bool {
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrWrongCluster) || errors.Is(err, ErrEncryptionMismatch) ||
		errors.Is(err, ErrVersion) || errors.Is(err, ErrNameCollision) || errors.Is(err, ErrPeerCertificate)
}

// refusalReason is the short reason logged and reported for a refused
// handshake, or "" for other failures.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "mesh secret mismatch"
	case errors.Is(err, ErrWrongCluster):
		return "cluster label mismatch"
	case errors.Is(err, ErrEncryptionMismatch):
		return "encryption mode mismatch"
	case errors.Is(err, ErrVersion):
		return "protocol version mismatch"
	case errors.Is(err, ErrNameCollision):
		return "peer name collision"
	case errors.Is(err, ErrPeerCertificate):
		return certRefusalReason(err)
	}
	return ""
}

// aloneBackoffMax caps seed backoff while we have no connection at all,
// so an isolated peer finds its way back quickly without dialling in a
// loop: 4 × BackoffMin (2 s by default).
func (m *connMaker) aloneBackoffMax() time.Duration { return 4 * m.r.cfg.BackoffMin }

// backoff is exponential with full jitter, floored at BackoffMin, capped
// at BackoffMax (StaleBackoffMax for addresses of collected peers), with a
// long floor for errors that retrying soon cannot fix.
func (m *connMaker) backoff(t *target, err error) time.Duration {
	cfg := m.r.cfg
	ceiling := cfg.BackoffMax
	if t.stale && !t.seed {
		ceiling = cfg.StaleBackoffMax
	}
	if t.seed && m.alone {
		ceiling = min(ceiling, m.aloneBackoffMax())
	}
	exp := cfg.BackoffMin << min(t.attempts, 20)
	if exp <= 0 || exp > ceiling {
		exp = ceiling
	}
	d := cfg.BackoffMin + time.Duration(m.r.randIntN(int(exp)+1))
	switch {
	case errors.Is(err, ErrNameCollision):
		d = max(d, cfg.NameCollisionBackoff)
	case errors.Is(err, ErrAuth), errors.Is(err, ErrWrongCluster), errors.Is(err, ErrEncryptionMismatch), errors.Is(err, ErrVersion),
		errors.Is(err, ErrPeerCertificate):
		d = max(d, cfg.AuthFailureBackoff)
	}
	return d
}

// connected marks the address of an established connection.
func (m *connMaker) connected(addr string, peer PeerName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.targets[addr]; t != nil {
		t.connected = true
		t.peer = peer
		t.lastErr, t.reason = "", ""
	}
}

// disconnected schedules a redial of a lost connection's address; a
// connection that lived long enough resets the backoff.
func (m *connMaker) disconnected(addr string, peer PeerName, since time.Time) {
	m.mu.Lock()
	now := m.r.cfg.Clock.Now()
	if t := m.targets[addr]; t != nil {
		t.connected = false
		if now.Sub(since) >= m.r.cfg.BackoffResetAfter {
			t.attempts = 0
		}
		t.attempts++
		t.nextTry = maxTime(now.Add(m.backoff(t, nil)), t.refusedUntil)
	}
	m.mu.Unlock()
	m.poke()
}

// TargetStatus describes one address the connection maker knows.
type TargetStatus struct {
	Addr      string    `json:"addr"`
	Seed      bool      `json:"seed"`
	Peer      PeerName  `json:"peer,omitempty"`
	State     string    `json:"state"` // connected, dialling, waiting, self
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// Reason is the short cause when the address refused us ("mesh secret
	// mismatch", "cluster label mismatch", ...).
	Reason string `json:"reason,omitempty"`
}

func (m *connMaker) status() []TargetStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TargetStatus, 0, len(m.targets))
	for _, t := range m.targets {
		st := TargetStatus{Addr: t.addr, Seed: t.seed, Peer: t.peer, Attempts: t.attempts, LastError: t.lastErr, Reason: t.reason}
		switch {
		case t.self:
			st.State = "self"
		case t.connected:
			st.State = "connected"
		case t.dialling:
			st.State = "dialling"
		default:
			st.State = "waiting"
			st.NextTry = t.nextTry
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b TargetStatus) int {
		if a.Addr < b.Addr {
			return -1
		}
		return 1
	})
	return out
}
