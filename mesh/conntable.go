package mesh

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connTable is the connection table: the connection in use for each
// neighbour, the tie-break losers kept as standbys, the incarnations a
// restart replaced, and the handshakes in progress. Its rules:
//
//   - Tie-break: when both sides dial at once, both keep the connection
//     dialled by the peer with the lower name (keepNew); the loser is a
//     standby until both ends are surely on the winner.
//   - Restart by UID: a connection from a known name with a new UID
//     replaces the old one; the replaced UID coming back means two live
//     peers share the name (ErrNameCollision).
//   - The winner dying: a live standby of the same incarnation takes over.
//   - Standby retirement: a standby we dialled goes once the winner has
//     carried a frame from the remote; any standby goes after a maximum age.
//
// The table only decides: it never starts, closes or logs a connection and
// never calls out, so the router may hold its own lock while asking it. The
// router makes every change to the in-use set with its own lock held, so the
// record and routes it derives from the table follow the changes in order.
type connTable struct {
	self       PeerName
	connLimit  int // in-use connections plus handshakes in progress
	maxPending int // handshakes in progress

	mu       sync.Mutex
	closed   bool
	inUse    map[PeerName]*conn
	standby  map[PeerName]*conn
	replaced map[PeerName]map[uint64]bool
	pending  map[net.Conn]string // handshake in progress → address

	// published is a copy of inUse for lock-free lookups on the data path.
	published atomic.Pointer[map[PeerName]*conn]
}

func newConnTable(self PeerName, connLimit, maxPending int) *connTable {
	t := &connTable{
		self:       self,
		connLimit:  connLimit,
		maxPending: maxPending,
		inUse:      map[PeerName]*conn{},
		standby:    map[PeerName]*conn{},
		replaced:   map[PeerName]map[uint64]bool{},
		pending:    map[net.Conn]string{},
	}
	t.publishLocked()
	return t
}

// current returns the in-use connections; the map must not be modified.
func (t *connTable) current() map[PeerName]*conn { return *t.published.Load() }

// lookup returns the connection in use for p, or nil.
func (t *connTable) lookup(p PeerName) *conn { return t.current()[p] }

func (t *connTable) publishLocked() {
	table := make(map[PeerName]*conn, len(t.inUse))
	for k, v := range t.inUse {
		table[k] = v
	}
	t.published.Store(&table)
}

// reserve counts a handshake in progress against the limits, or refuses it.
func (t *connTable) reserve(nc net.Conn, addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.pending) >= t.maxPending || len(t.inUse)+len(t.pending) >= t.connLimit {
		return false
	}
	t.pending[nc] = addr
	return true
}

// release forgets a reserved handshake that failed.
func (t *connTable) release(nc net.Conn) {
	t.mu.Lock()
	delete(t.pending, nc)
	t.mu.Unlock()
}

// rekey moves a handshake reservation from nc to wrapped, the connection
// that now carries the handshake (TLS around the TCP connection).
func (t *connTable) rekey(nc, wrapped net.Conn) {
	t.mu.Lock()
	if addr, ok := t.pending[nc]; ok {
		delete(t.pending, nc)
		t.pending[wrapped] = addr
	}
	t.mu.Unlock()
}

// retirement is a connection the router must close gracefully, and why.
type retirement struct {
	c      *conn
	reason string
}

// addOutcome is what add decided for a new connection.
type addOutcome struct {
	// inUse: the new connection is now the one in use for its peer, so the
	// in-use set changed. Otherwise it lost a tie-break.
	inUse bool
	// retire lists connections to close gracefully once the new one runs
	// (it may itself be among them).
	retire []retirement
}

// add installs a freshly authenticated connection whose handshake was
// reserved, resolving duplicates and restarts.
func (t *connTable) add(c *conn) (addOutcome, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, c.nc)
	if t.closed {
		return addOutcome{}, ErrClosed
	}
	var out addOutcome
	var loser *conn
	duplicate := false
	if old, ok := t.inUse[c.remote]; ok {
		switch {
		case old.remoteUID != c.remoteUID:
			if t.replaced[c.remote][c.remoteUID] {
				// An incarnation we already replaced is back: two live peers
				// share the name.
				return addOutcome{}, fmt.Errorf("%w: %q has two live incarnations (%016x, %016x)", ErrNameCollision, c.remote, c.remoteUID, old.remoteUID)
			}
			if t.replaced[c.remote] == nil {
				t.replaced[c.remote] = map[uint64]bool{}
			}
			t.replaced[c.remote][old.remoteUID] = true
			loser = old
		case keepNew(t.self, old, c):
			loser, duplicate = old, true
		default:
			// c loses the tie-break and is never used for sending.
			if !t.retireDuplicateLocked(c, old, &out) {
				out.retire = append(out.retire, retirement{c, "duplicate connection"})
			}
			return out, nil
		}
	}
	if len(t.inUse) >= t.connLimit && loser == nil {
		return addOutcome{}, fmt.Errorf("mesh: connection limit %d reached", t.connLimit)
	}
	t.inUse[c.remote] = c
	out.inUse = true
	if loser != nil && !(duplicate && t.retireDuplicateLocked(loser, c, &out)) {
		out.retire = append(out.retire, retirement{loser, "superseded by a newer connection"})
	}
	t.publishLocked()
	return out, nil
}

// retireDuplicateLocked handles the losing connection of a tie-break: it
// is kept as an unused standby until both ends are surely on the winner,
// so there is never a moment without a usable link. If we dialled the
// loser, we close it once the winner has carried a frame from the remote
// (proof that the remote installed the winner too); if the remote dialled
// it, the remote closes it. A standby is promoted if the winner dies, and
// retired by expiredStandbys at the latest. It reports whether the loser
// became a standby; a standby it displaces is added to out.retire.
func (t *connTable) retireDuplicateLocked(loser, winner *conn, out *addOutcome) bool {
	if loser.outbound && winner.framesIn.Load() > 0 {
		return false
	}
	if prev := t.standby[loser.remote]; prev != nil && prev != loser {
		out.retire = append(out.retire, retirement{prev, "duplicate connection"})
	}
	t.standby[loser.remote] = loser
	return true
}

// firstFrame is called when c receives its first frame: if c is in use and
// we dialled a standby duplicate, the remote now uses c, so the standby can
// go. It returns the standby to close, or nil.
func (t *connTable) firstFrame(c *conn) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	sb := t.standby[c.remote]
	if t.inUse[c.remote] != c || sb == nil || !sb.outbound {
		return nil
	}
	delete(t.standby, c.remote)
	return sb
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

// removeOutcome is what remove decided for a dead connection.
type removeOutcome struct {
	// changed: the in-use set changed (c was in use).
	changed bool
	// lost: c was in use and no standby took over; the peer lost its link.
	lost bool
	// addrInUse: another connection in use has c's address.
	addrInUse bool
}

// remove forgets a dead connection; if it was in use, a live standby of
// the same incarnation takes over.
func (t *connTable) remove(c *conn) removeOutcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.standby[c.remote] == c {
		delete(t.standby, c.remote)
	}
	var out removeOutcome
	if t.inUse[c.remote] == c {
		out.changed, out.lost = true, true
		delete(t.inUse, c.remote)
		if sb := t.standby[c.remote]; sb != nil && sb.remoteUID == c.remoteUID && !sb.closing.Load() {
			// The tie-break winner died but the standby is alive: use it.
			delete(t.standby, c.remote)
			t.inUse[c.remote] = sb
			out.lost = false
		}
		t.publishLocked()
	}
	for _, other := range t.inUse {
		out.addrInUse = out.addrInUse || other.addr == c.addr
	}
	return out
}

// expiredStandbys returns the standbys older than maxAge at now; they stay
// in the table until they are closed and removed.
func (t *connTable) expiredStandbys(now time.Time, maxAge time.Duration) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*conn
	for _, sb := range t.standby {
		if now.Sub(sb.since) > maxAge {
			out = append(out, sb)
		}
	}
	return out
}

// close refuses every later reservation and addition, and returns the
// connections (in use and standby) and handshakes in progress to close.
func (t *connTable) close() ([]*conn, []net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	conns := make([]*conn, 0, len(t.inUse)+len(t.standby))
	for _, c := range t.inUse {
		conns = append(conns, c)
	}
	for _, c := range t.standby {
		conns = append(conns, c)
	}
	pending := make([]net.Conn, 0, len(t.pending))
	for nc := range t.pending {
		pending = append(pending, nc)
	}
	return conns, pending
}

// tableEntry is one connection of the table as the status shows it.
type tableEntry struct {
	c     *conn
	state string // established, standby
}

// snapshot lists the connections (in use and standby) and the addresses
// of the handshakes in progress, in no particular order.
func (t *connTable) snapshot() ([]tableEntry, []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	entries := make([]tableEntry, 0, len(t.inUse)+len(t.standby))
	for _, c := range t.inUse {
		entries = append(entries, tableEntry{c, "established"})
	}
	for _, c := range t.standby {
		entries = append(entries, tableEntry{c, "standby"})
	}
	pending := make([]string, 0, len(t.pending))
	for _, addr := range t.pending {
		pending = append(pending, addr)
	}
	return entries, pending
}

// handshakes returns the number of handshakes in progress.
func (t *connTable) handshakes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}
