package mesh

import (
	"sync/atomic"
	"time"
)

// Link liveness, Lifeguard-style (the lessons HashiCorp's Lifeguard paper
// drew for memberlist's failure detector, applied to one TCP link):
//
//  1. A member that is itself slow declares links dead less eagerly. Each
//     writer's heartbeat ticker measures how late the runtime delivered
//     its tick; late ticks raise the router's local health score, on-time
//     ticks lower it, and the dead timeout grows with the score
//     (localHealth.deadTimeout), at most to 1.5 × DeadTimeout. Suspicion,
//     which only steers traffic to another path, keeps the unscaled time.
//  2. Suspicion is confirmed by independent evidence before a link is
//     declared dead: a link silent for a heartbeat less than the dead
//     timeout is suspect; a later check past the timeout confirms it only
//     if it is still silent AND something shows that our own receive path
//     works — another connection received a frame recently, or (for a
//     link that delivers but never answers our pings) the link itself is
//     delivering; that case waits for the backstop (3), since traffic
//     already left the link and the answerer may only be starved. A member alone with one neighbour has no witness and
//     trusts the timer after the confirmation check.
//     Time we spent starved ourselves is not held against a link: a tick
//     that arrives more than half a heartbeat late ends a starvation
//     episode, and confirming a death needs the dead timeout of silence
//     (or of unanswered pings) counted from then, so our readers get a
//     full timeout to drain what arrived while we were not running.
//     While we stay starved (every tick late) the loop only suspects.
//  3. The backstop: a link silent for twice the health-scaled dead
//     timeout is dead whatever the witnesses say (silence counted from
//     the end of our last starvation too), and the reader's deadline of
//     3 × DeadTimeout ends it in any case. With the defaults a healthy process moves traffic off a dead
//     link after ~0.45–0.6 s and declares it dead after ~0.75 s, within
//     Raft's 1 s election timeout; a starved one takes at most ~1.8 s
//     (the reader's deadline). Suspicion, and with it the move of
//     traffic to another path, never waits for our own health.
//
// The old detector ran in each connection's writer and skipped any check
// that ran more than three heartbeats late. Under a saturating write load
// the cut-off member's writer blocks in a write to the silently dead link
// as soon as its buffer fills, so that link's checks stopped altogether,
// and the first check after the write returned was skipped as "starved":
// detection fell to the reader's backstop alone, while the other side,
// whose writer was not blocked, rerouted. Checks now run in one loop per
// router (livenessLoop) that never blocks on I/O, and late checks count
// against local health instead of being skipped.

// livenessLoop checks every connection each heartbeat interval. It runs
// apart from the connections' writers, so a writer blocked in a write to a
// silently dead link (its buffer full under load) does not stop its own
// link's checks, and measures how late its ticks arrive for the local
// health score. It ends with the router.
func (r *Router) livenessLoop() {
	defer r.wg.Done()
	ticker := time.NewTicker(r.cfg.HeartbeatInterval)
	defer ticker.Stop()
	var awakeSince time.Time // the end of our last starvation episode
	for {
		select {
		case <-r.ctx.Done():
			return
		case tick := <-ticker.C:
			now := time.Now()
			late := now.Sub(tick)
			r.health.observeTick(late, r.cfg.HeartbeatInterval)
			if late > r.cfg.HeartbeatInterval/2 {
				awakeSince = now
			}
			entries, _ := r.conns.snapshot()
			for _, e := range entries {
				if err := e.c.checkLiveness(now, awakeSince); err != nil {
					e.c.close(err)
				}
			}
		}
	}
}

// maxLocalHealth caps the local health score; each point adds
// DeadTimeout/(2 × maxLocalHealth) to the dead timeout.
const maxLocalHealth = 8

// localHealth is the router's Lifeguard local health multiplier: 0 is
// healthy; it rises when our own goroutines run late.
type localHealth struct{ score atomic.Int32 }

// observeTick records how late a heartbeat tick was delivered relative to
// the interval: more than half an interval late is a sign of starvation,
// less than a tenth is on time.
func (h *localHealth) observeTick(late, interval time.Duration) {
	switch {
	case late > interval/2:
		if s := h.score.Load(); s < maxLocalHealth {
			h.score.CompareAndSwap(s, s+1)
		}
	case late < interval/10:
		if s := h.score.Load(); s > 0 {
			h.score.CompareAndSwap(s, s-1)
		}
	}
}

// get returns the current score.
func (h *localHealth) get() int { return int(h.score.Load()) }

// deadTimeout scales base by the local health score: up to 1.5 × base.
func (h *localHealth) deadTimeout(base time.Duration) time.Duration {
	return base + base*time.Duration(h.get())/(2*maxLocalHealth)
}

// linkVerdict is what one liveness check concludes about a link.
type linkVerdict int

const (
	linkAlive linkVerdict = iota
	linkSuspect
	linkDead
)

func (v linkVerdict) String() string {
	switch v {
	case linkAlive:
		return "up"
	case linkSuspect:
		return "suspect"
	default:
		return "dead"
	}
}

// linkEvidence is everything one liveness check looks at.
type linkEvidence struct {
	now      time.Time
	lastRecv time.Time // last frame on this link
	lastPong time.Time // last answer to our pings on this link
	// othersRecv is the latest frame received on any other connection
	// (zero: we have no other connection).
	othersRecv time.Time
	// suspectedSince is when an earlier check found the link silent (zero:
	// it was not suspect).
	suspectedSince time.Time
	dead           time.Duration // the health-scaled dead timeout
	// suspect is when silence makes the link suspect: a heartbeat before
	// the unscaled dead timeout. Suspicion only moves traffic to another
	// path (reversible and cheap), so a starved process is not slower to
	// reroute; only declaring the link dead waits for the scaled timeout.
	suspect   time.Duration
	backstop  time.Duration // silent this long: dead regardless
	heartbeat time.Duration
	// awakeSince is the end of our own last starvation episode (zero:
	// none seen): silence and unanswered pings before it do not count
	// towards confirming a death, only towards suspicion.
	awakeSince time.Time
}

// newLinkEvidence fills in the timeouts a check at now judges by: the
// router's settings scaled by its local health. The caller adds what it
// observed on the link.
func newLinkEvidence(cfg *Config, h *localHealth, now, awakeSince time.Time) linkEvidence {
	dead := h.deadTimeout(cfg.DeadTimeout)
	return linkEvidence{
		now:        now,
		dead:       dead,
		suspect:    max(cfg.DeadTimeout-cfg.HeartbeatInterval, cfg.HeartbeatInterval),
		backstop:   2 * dead,
		heartbeat:  cfg.HeartbeatInterval,
		awakeSince: awakeSince,
	}
}

// judgeLink decides a link's state from the evidence. It is a pure
// function, so the rules are tested deterministically.
func judgeLink(e linkEvidence) (linkVerdict, error) {
	// Suspicion counts all the silence; confirmation only what passed
	// while we were running (awakeSince).
	silent := e.now.Sub(later(e.lastRecv, e.awakeSince))
	unanswered := e.now.Sub(later(e.lastPong, e.awakeSince))
	if silent > e.backstop {
		return linkDead, errDeadLink
	}
	// Suspicion starts a heartbeat before the dead timeout, so that the
	// confirming check costs no detection time.
	if e.now.Sub(e.lastRecv) <= e.suspect && e.now.Sub(e.lastPong) <= e.suspect {
		return linkAlive, nil
	}
	// Suspect. Dead only past the timeout, on a later check than the one
	// that suspected (a starved reader gets a chance to drain what it had
	// buffered) ...
	if (silent <= e.dead && unanswered <= e.dead) || e.suspectedSince.IsZero() || e.now.Sub(e.suspectedSince) < e.heartbeat/2 {
		return linkSuspect, nil
	}
	err := errDeadLink
	if silent <= e.dead {
		// Frames arrive but our pings go unanswered: the link itself
		// proves our receive path works (a one-way link, or a peer that
		// stopped reading). Traffic left the link when it became suspect,
		// so the verdict waits for the backstop: a peer whose reader was
		// held up on a busy CPU while its writer still ran gets time to
		// answer before the connection is torn down.
		if unanswered <= e.backstop {
			return linkSuspect, nil
		}
		return linkDead, errNoPong
	}
	// ... and only with a witness that our receive path works: another
	// connection received a frame within the last two heartbeats. Without
	// any other connection there is no witness; trust the timer.
	if e.othersRecv.IsZero() || e.now.Sub(e.othersRecv) <= 2*e.heartbeat {
		return linkDead, err
	}
	return linkSuspect, nil
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
