package peer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/meshconn"
)

// ErrUnknownMember: a call addressed a member id the host cannot resolve
// to peer URLs (not a member, or removed).
var ErrUnknownMember = errors.New("peer: member has no mesh peer")

// Host is the member a Transport serves: raft (see Raft) plus the
// membership it addresses members by.
type Host interface {
	Raft
	// PeerURLs are member id's advertised peer URLs from the membership
	// the member knows (committed, or what it bootstrapped from); ok is
	// false for an unknown or removed member.
	PeerURLs(id uint64) (urls []string, ok bool)
	// MembershipVersion changes whenever PeerURLs' answers may change;
	// while it stays the same non-zero value the transport reuses the peer
	// it resolved per member id. 0: do not reuse.
	MembershipVersion() uint64
	// RemovedMemberSends is told (at most once a second per sender) that a
	// member removed from the cluster still sends raft messages from peer,
	// typically because it was down when its removal was committed.
	RemovedMemberSends(id uint64, peer string)
}

// Config configures a Transport.
type Config struct {
	Logger *zap.Logger // nil: zap.NewNop()
	// Router is the member's running mesh router; the caller owns it and
	// stops it after Close. Its MaxDatagramSize must be at least
	// MaxDatagramSize(MaxSizePerMsg) (raftnode checks it through
	// MaxMessageSize), and its channels serve one Transport.
	Router *mesh.Router
	Host   Host
	// PeerURLs, when set, are this member's advertised peer URLs: New
	// refuses a router that is not named NameFromURLs(PeerURLs), because
	// the other members would address this member by that name.
	PeerURLs []string
	// Bulk tunes snapshot transfers; zero values take meshconn's defaults.
	Bulk meshconn.BulkConfig
}

// Transport is a member's one door to the other members: raft messages and
// snapshots (RaftTransport) and peer requests (Endpoint), addressed by
// member id. It satisfies raftnode.Transport and kvstore.Peers.
type Transport struct {
	r    *mesh.Router
	host Host
	raft *RaftTransport
	ep   *Endpoint
}

// New opens the raft, snapshot and request channels on cfg.Router and
// starts delivering to cfg.Host.
func New(cfg Config) (*Transport, error) {
	if cfg.Router == nil || cfg.Host == nil {
		return nil, errors.New("peer: Config.Router and Config.Host are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.PeerURLs != nil {
		want, err := NameFromURLs(cfg.PeerURLs)
		if err != nil {
			return nil, fmt.Errorf("peer: mesh peer name: %w", err)
		}
		if got := cfg.Router.Name(); got != want {
			return nil, fmt.Errorf("peer: the mesh router is named %q but this member's peer name must be %q (host:port of its first sorted peer URL)", got, want)
		}
	}
	t := &Transport{r: cfg.Router, host: cfg.Host}
	ep, err := NewEndpoint(EndpointConfig{Logger: cfg.Logger, Router: cfg.Router})
	if err != nil {
		return nil, err
	}
	rt, err := NewRaftTransport(RaftConfig{Logger: cfg.Logger, Router: cfg.Router, Raft: cfg.Host, Resolve: t.resolve, MembershipVersion: cfg.Host.MembershipVersion, Bulk: cfg.Bulk,
		OnRemovedSender: func(id uint64, p mesh.PeerName) { cfg.Host.RemovedMemberSends(id, string(p)) }})
	if err != nil {
		ep.Close()
		return nil, err
	}
	t.ep, t.raft = ep, rt
	return t, nil
}

// resolve maps a member id to its mesh peer through the host's membership.
func (t *Transport) resolve(id uint64) (mesh.PeerName, bool) {
	urls, ok := t.host.PeerURLs(id)
	if !ok {
		return "", false
	}
	name, err := NameFromURLs(urls)
	return name, err == nil
}

// Send hands raft messages to the mesh (raftnode.Transport).
func (t *Transport) Send(msgs []*raftpb.Message) { t.raft.Send(msgs) }

// SendSnapshot streams a MsgSnap with its database (raftnode.Transport).
func (t *Transport) SendSnapshot(m snap.Message) { t.raft.SendSnapshot(m) }

// MaxMessageSize is the largest marshalled raft message the mesh carries.
func (t *Transport) MaxMessageSize() int { return t.raft.MaxMessageSize() }

// Call runs method on member id and waits for its answer (see Endpoint.Call
// for the errors; ErrUnknownMember when id has no mesh peer).
func (t *Transport) Call(ctx context.Context, id uint64, method uint8, req []byte) ([]byte, error) {
	name, ok := t.resolve(id)
	if !ok {
		return nil, fmt.Errorf("%w: %x", ErrUnknownMember, id)
	}
	return t.ep.Call(ctx, name, method, req)
}

// CallPeer runs method on a mesh peer whose member id is not known yet
// (bootstrap), or that is no member at all (a removed one).
func (t *Transport) CallPeer(ctx context.Context, peer string, method uint8, req []byte) ([]byte, error) {
	return t.ep.Call(ctx, mesh.PeerName(peer), method, req)
}

// ReachablePeers are the other mesh peers reachable now, in name order.
func (t *Transport) ReachablePeers() []string {
	var out []string
	for _, p := range t.r.ReachablePeers() {
		out = append(out, string(p))
	}
	return out
}

// Handle serves method with h (nil removes it); from is the calling mesh
// peer, which PeerOwns relates to peer URLs.
func (t *Transport) Handle(method uint8, h func(ctx context.Context, from string, req []byte) ([]byte, error)) {
	if h == nil {
		t.ep.Handle(method, nil)
		return
	}
	t.ep.Handle(method, func(ctx context.Context, src mesh.PeerName, req []byte) ([]byte, error) {
		return h(ctx, string(src), req)
	})
}

// Self is this member's own mesh peer name.
func (t *Transport) Self() string { return string(t.r.Name()) }

// PeerOwns reports whether peer is the mesh peer of a member with these
// peer URLs.
func (t *Transport) PeerOwns(peer string, peerURLs []string) bool {
	name, err := NameFromURLs(peerURLs)
	return err == nil && string(name) == peer
}

// ActiveSince is when member id's mesh peer last became reachable (zero:
// unreachable or unknown). known is always true: the mesh knows.
func (t *Transport) ActiveSince(id uint64) (since time.Time, known bool) {
	name, ok := t.resolve(id)
	if !ok {
		return time.Time{}, true
	}
	return t.raft.activeSince(name), true
}

// RouteChangedNotify returns a channel closed at the next change of any
// mesh route (see RaftTransport.RouteChangedNotify).
func (t *Transport) RouteChangedNotify() <-chan struct{} { return t.raft.RouteChangedNotify() }

// Stats counts the raft traffic.
func (t *Transport) Stats() RaftStats { return t.raft.Stats() }

// Close stops the request endpoint and the raft transport; the router
// stays the caller's. Idempotent.
func (t *Transport) Close() error {
	t.ep.Close()
	return t.raft.Close()
}
