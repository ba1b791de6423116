package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/peer"
)

// discoveryConflictGrace is how long a member that sees more than
// --discovery-size candidates and no cluster yet waits for one to appear
// (a set that includes it, or a cluster to join) before it gives up. The
// extra members may be latecomers racing the bootstrap of the first N.
const discoveryConflictGrace = 5 * time.Second

// announcement is what every member gossips about itself on the discovery
// channel. Only its owner changes it, bumping Version; copies merge as
// last-writer-wins registers, so the union of announcements is a CRDT.
type announcement struct {
	Peer       mesh.PeerName `json:"peer"` // mesh name, the map key
	Name       string        `json:"name"` // --name
	PeerURLs   []string      `json:"peerURLs"`
	ClientURLs []string      `json:"clientURLs,omitempty"`
	Token      string        `json:"token"`
	// Version starts at the owner's start time (ns) and grows with every
	// change, so a restarted owner supersedes its old announcement.
	Version uint64 `json:"version"`
	// Seen is the sorted set of candidates (same token, no cluster yet)
	// the owner knows of. It only grows during one incarnation; the
	// two-phase rule in decide relies on that.
	Seen []mesh.PeerName `json:"seen,omitempty"`
	// Initial is the member set the owner bootstrapped a new cluster with.
	Initial []mesh.PeerName `json:"initial,omitempty"`
	// ClusterID is set (hex) once the owner runs a cluster member.
	ClusterID string `json:"clusterID,omitempty"`
}

// newer reports whether a should replace b in a merge: higher version,
// and for equal versions (never produced by a correct owner) the larger
// encoding, so merging stays commutative whatever arrives.
func (a *announcement) newer(b *announcement) bool {
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	ea, _ := json.Marshal(a)
	eb, _ := json.Marshal(b)
	return bytes.Compare(ea, eb) > 0
}

// announcements is the gossiped state: mesh name → announcement.
type announcements map[mesh.PeerName]*announcement

// merge folds other into s and returns what changed s (nil if nothing).
func (s announcements) merge(other announcements) announcements {
	var delta announcements
	for k, a := range other {
		if cur, ok := s[k]; ok && !a.newer(cur) {
			continue
		}
		c := *a
		s[k] = &c
		if delta == nil {
			delta = announcements{}
		}
		delta[k] = &c
	}
	return delta
}

func (s announcements) clone() announcements {
	out := make(announcements, len(s))
	for k, a := range s {
		c := *a
		out[k] = &c
	}
	return out
}

// Encode implements mesh.GossipData. Announcements are small (a few
// hundred bytes), so one message carries them all.
func (s announcements) Encode() [][]byte {
	b, err := json.Marshal(s)
	if err != nil {
		return nil
	}
	return [][]byte{b}
}

// Merge implements mesh.GossipData.
func (s announcements) Merge(other mesh.GossipData) mesh.GossipData {
	o, ok := other.(announcements)
	if !ok {
		return s
	}
	s.merge(o)
	return s
}

func decodeAnnouncements(b []byte) (announcements, error) {
	var s announcements
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("discovery: malformed announcements: %w", err)
	}
	for k, a := range s {
		if a == nil || a.Peer != k {
			return nil, fmt.Errorf("discovery: announcement keyed %q names peer %v", k, a)
		}
	}
	return s, nil
}

// decisionKind is what a discovering member does next.
type decisionKind int

const (
	decideWait      decisionKind = iota // not enough information yet
	decideBootstrap                     // start a new cluster with set
	decideJoin                          // a cluster exists without us: join it
	decideTooMany                       // more than N candidates and no cluster
	decideRefuse                        // inconsistent announcements
)

func (k decisionKind) String() string {
	return [...]string{"wait", "bootstrap", "join", "too-many", "refuse"}[k]
}

type decision struct {
	kind   decisionKind
	set    []mesh.PeerName // bootstrap: the initial members, sorted
	reason string
}

func (d decision) String() string {
	s := d.kind.String()
	if len(d.set) > 0 {
		s += " " + joinNames(d.set)
	}
	if d.reason != "" {
		s += ": " + d.reason
	}
	return s
}

func joinNames(ns []mesh.PeerName) string {
	ss := make([]string, len(ns))
	for i, n := range ns {
		ss[i] = string(n)
	}
	return strings.Join(ss, ",")
}

// decide is the discovery agreement, a pure function of what a member
// knows (the announcements with its own cluster token), so every member
// with the same view decides the same. In order:
//
//  1. Someone bootstrapped with a set that contains us: bootstrap with
//     exactly that set (a member that was counted must not go elsewhere).
//  2. A cluster exists (someone bootstrapped, or runs a member) without
//     us: join it.
//  3. Exactly n candidates, and every one of them announces that it sees
//     exactly these n: bootstrap with them. Because a member's Seen only
//     grows, no member can have confirmed two different n-sets, so two
//     members that share a candidate never bootstrap different sets.
//  4. Fewer: wait. More: too many (the caller waits a grace period for
//     rule 1 or 2 to apply, then refuses).
func decide(self mesh.PeerName, n int, view announcements) decision {
	names := slices.Sorted(maps.Keys(view))
	byName := map[string]mesh.PeerName{}
	for _, p := range names {
		a := view[p]
		if other, dup := byName[a.Name]; dup {
			return decision{kind: decideRefuse, reason: fmt.Sprintf("members %s and %s both use --name %q", other, p, a.Name)}
		}
		byName[a.Name] = p
	}
	var mine []mesh.PeerName
	for _, p := range names {
		a := view[p]
		if len(a.Initial) == 0 || !slices.Contains(a.Initial, self) {
			continue
		}
		if mine != nil && !slices.Equal(mine, a.Initial) {
			return decision{kind: decideRefuse, reason: fmt.Sprintf("conflicting initial memberships announced: [%s] and [%s]", joinNames(mine), joinNames(a.Initial))}
		}
		mine = a.Initial
	}
	if mine != nil {
		for _, p := range mine {
			if _, ok := view[p]; !ok {
				return decision{kind: decideWait, reason: fmt.Sprintf("initial member %s not announced yet", p)}
			}
		}
		return decision{kind: decideBootstrap, set: slices.Clone(mine)}
	}
	for _, p := range names {
		if a := view[p]; len(a.Initial) > 0 || a.ClusterID != "" {
			return decision{kind: decideJoin, reason: fmt.Sprintf("member %s (%s) already runs a cluster", a.Name, p)}
		}
	}
	switch {
	case len(names) < n:
		return decision{kind: decideWait, reason: fmt.Sprintf("%d of %d members known", len(names), n)}
	case len(names) > n:
		return decision{kind: decideTooMany, reason: fmt.Sprintf("%d members want to bootstrap a %d-member cluster: %s", len(names), n, joinNames(names))}
	}
	for _, p := range names {
		if !slices.Equal(view[p].Seen, names) {
			return decision{kind: decideWait, reason: fmt.Sprintf("member %s has not confirmed the set yet", p)}
		}
	}
	return decision{kind: decideBootstrap, set: names}
}

// discovery is one member's side of the discovery channel: it announces
// the member, merges what others announce and, while the member is still
// discovering, decides. It is a mesh.Gossiper; the router calls it on the
// channel's delivery goroutine.
type discovery struct {
	lg    *zap.Logger
	self  mesh.PeerName
	token string
	// conflictGrace is discoveryConflictGrace; tests shorten it.
	conflictGrace time.Duration

	mu      sync.Mutex
	state   announcements // everything heard, any token
	ch      *mesh.GossipChannel
	changed chan struct{} // poked (non-blocking) when state changes
}

func newDiscovery(lg *zap.Logger, own announcement, start time.Time) *discovery {
	own.Version = uint64(start.UnixNano())
	own.Seen = []mesh.PeerName{own.Peer}
	return &discovery{
		lg:            lg,
		conflictGrace: discoveryConflictGrace,
		self:          own.Peer,
		token:         own.Token,
		state:         announcements{own.Peer: &own},
		changed:       make(chan struct{}, 1),
	}
}

// register opens the discovery channel on r (before r starts).
func (d *discovery) register(r *mesh.Router) error {
	ch, err := r.NewGossip(peer.DiscoveryChannel, "discovery", d)
	if err != nil {
		return fmt.Errorf("discovery channel: %w", err)
	}
	d.mu.Lock()
	d.ch = ch
	d.mu.Unlock()
	return nil
}

// update changes our own announcement under the lock and broadcasts it.
func (d *discovery) update(f func(a *announcement)) {
	d.mu.Lock()
	own := *d.state[d.self]
	f(&own)
	own.Version++
	d.state[d.self] = &own
	ch := d.ch
	d.mu.Unlock()
	if ch != nil {
		ch.GossipBroadcast(announcements{d.self: &own})
	}
}

// view is the candidates with our token, cloned.
func (d *discovery) view() announcements {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := announcements{}
	for k, a := range d.state {
		if a.Token == d.token {
			c := *a
			out[k] = &c
		}
	}
	return out
}

func (d *discovery) absorb(s announcements) mesh.GossipData {
	d.mu.Lock()
	delta := d.state.merge(s)
	d.mu.Unlock()
	if delta == nil {
		return nil
	}
	select {
	case d.changed <- struct{}{}:
	default:
	}
	return delta
}

// OnGossipUnicast implements mesh.Gossiper (unused by discovery).
func (d *discovery) OnGossipUnicast(mesh.PeerName, []byte) error { return nil }

// OnGossipBroadcast implements mesh.Gossiper.
func (d *discovery) OnGossipBroadcast(_ mesh.PeerName, update []byte) error {
	s, err := decodeAnnouncements(update)
	if err != nil {
		return err
	}
	d.absorb(s)
	return nil
}

// Gossip implements mesh.Gossiper: the complete state, copied.
func (d *discovery) Gossip() mesh.GossipData {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state.clone()
}

// OnGossip implements mesh.Gossiper.
func (d *discovery) OnGossip(msg []byte) (mesh.GossipData, error) {
	s, err := decodeAnnouncements(msg)
	if err != nil {
		return nil, err
	}
	delta := d.absorb(s)
	if delta == nil {
		return nil, nil // a nil announcements in an interface is not nil
	}
	return delta, nil
}

// ErrDiscoveryTooMany is returned when more members than --discovery-size
// try to bootstrap and no cluster formed that this member belongs to.
var ErrDiscoveryTooMany = errors.New("discovery: more members than --discovery-size want to bootstrap")

// ErrDiscoveryTimeout: mesh discovery neither formed nor found a cluster
// within Config.DiscoveryTimeout. The error wrapping it names the members
// found and how many are missing (shortfall).
var ErrDiscoveryTimeout = errors.New("discovery did not form a cluster")

// shortfall says who discovery found and who it is missing, for an
// operator whose start timed out: "found 2 of 3 members: a (127.0.0.1:2380),
// b (127.0.0.1:2381); missing 1 (...why...)". Members that are not reachable
// have no name yet, so the missing ones are counted, with the mesh's reason
// when a seed could not be reached or refused us.
func (d *discovery) shortfall(n int, st mesh.Status) string {
	view := d.view()
	var found []string
	for _, p := range slices.Sorted(maps.Keys(view)) {
		if a := view[p]; len(a.Initial) == 0 && a.ClusterID == "" {
			found = append(found, fmt.Sprintf("%s (%s)", a.Name, p))
		}
	}
	s := fmt.Sprintf("found %d of %d members: %s", len(found), n, strings.Join(found, ", "))
	if missing := n - len(found); missing > 0 {
		s += fmt.Sprintf("; missing %d", missing)
		var unreached []string
		for _, t := range st.Targets {
			switch {
			case t.Reason != "":
				unreached = append(unreached, t.Addr+": "+t.Reason)
			case t.LastError != "" && t.State != "connected":
				unreached = append(unreached, t.Addr+": "+t.LastError)
			}
		}
		if len(unreached) > 0 {
			s += " (unreachable --peers/seeds: " + strings.Join(unreached, "; ") + ")"
		} else {
			s += " (no other member announced itself over the mesh; are they started with the same --discovery-size, --initial-cluster-token and a reachable --peers?)"
		}
	}
	return s
}

// run waits until the discovery decides for this member, keeping its
// announced Seen set current. It returns the decision (bootstrap or join)
// with the announcements that back it, or an error.
func (d *discovery) run(ctx context.Context, n int) (decision, announcements, error) {
	var tooManySince time.Time
	tick := time.NewTicker(250 * time.Millisecond) // re-evaluates the grace timer
	defer tick.Stop()
	last := ""
	for {
		view := d.view()
		// Our Seen tracks the candidates (no cluster yet) we know of.
		var cands []mesh.PeerName
		for _, p := range slices.Sorted(maps.Keys(view)) {
			if a := view[p]; len(a.Initial) == 0 && a.ClusterID == "" {
				cands = append(cands, p)
			}
		}
		if own := view[d.self]; !isSuperset(own.Seen, cands) {
			seen := union(own.Seen, cands)
			d.update(func(a *announcement) { a.Seen = seen })
			continue
		}
		dec := decide(d.self, n, view)
		if s := dec.String(); s != last {
			d.lg.Info("mesh discovery", zap.String("state", s), zap.Int("discovery-size", n))
			last = s
		}
		switch dec.kind {
		case decideBootstrap, decideJoin:
			return dec, view, nil
		case decideRefuse:
			return dec, nil, fmt.Errorf("discovery: %s", dec.reason)
		case decideTooMany:
			if tooManySince.IsZero() {
				tooManySince = time.Now()
			} else if time.Since(tooManySince) > d.conflictGrace {
				return dec, nil, fmt.Errorf("%w: %s; start exactly --discovery-size members, or add members to a running cluster with --join", ErrDiscoveryTooMany, dec.reason)
			}
		default:
			tooManySince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return dec, nil, fmt.Errorf("discovery did not finish (%s): %w", dec, ctx.Err())
		case <-d.changed:
		case <-tick.C:
		}
	}
}

func isSuperset(have, want []mesh.PeerName) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func union(a, b []mesh.PeerName) []mesh.PeerName {
	out := slices.Concat(a, b)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return slices.Compact(out)
}
