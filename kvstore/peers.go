package kvstore

import (
	"context"
	"errors"
	"io"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/raftnode"
)

// Peers is how this member talks to the other members: raft messages
// (raftnode.Transport) and peer requests, addressed by member id. The peer
// package implements it over the mesh (peer.Transport); a member without
// one (Config.Peers nil) gets noPeers.
type Peers interface {
	raftnode.Transport
	// Call runs method on member id and waits for its answer. Errors a
	// handler returned that are among peerErrors come back as their code.
	Call(ctx context.Context, id uint64, method uint8, req []byte) ([]byte, error)
	// CallPeer runs method on a peer by its network name, for members
	// whose id is not known (bootstrap, a removed member).
	CallPeer(ctx context.Context, peer string, method uint8, req []byte) ([]byte, error)
	// ReachablePeers are the other peers reachable now (bootstrap).
	ReachablePeers() []string
	// Handle serves method; from is the calling peer's network name.
	Handle(method uint8, h func(ctx context.Context, from string, req []byte) ([]byte, error))
	// PeerOwns reports whether peer is the network peer of a member with
	// these peer URLs.
	PeerOwns(peer string, peerURLs []string) bool
	// ActiveSince is when member id last became reachable (zero: not now);
	// known is false when the network cannot tell.
	ActiveSince(id uint64) (since time.Time, known bool)
	// RouteChangedNotify is closed at the next route change; nil when the
	// network has no routes.
	RouteChangedNotify() <-chan struct{}
	Close() error
}

// PeerHost is what New hands Config.Peers: the member as the transport
// sees it (etcd's rafthttp.Raft plus the membership). It delivers to raft
// only once the member runs; until then ID is 0 and messages are refused.
type PeerHost interface {
	ID() uint64
	Process(ctx context.Context, m *raftpb.Message) error
	IsIDRemoved(id uint64) bool
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, failed bool)
	SaveSnapshotDB(r io.Reader, index uint64) (int64, error)
	PeerURLs(id uint64) (urls []string, ok bool)
	MembershipVersion() uint64
	RemovedMemberSends(id uint64, peer string)
}

// errNoPeers: this member has no network to other members (Config.Peers
// nil); forwarding answers what etcd's member without a leader link does.
var errNoPeers = errors.New("kvstore: no connection to other members")

// noPeers is the Peers of a member without a network: it forwards nothing
// and knows nothing about connectivity (strict reconfiguration checks that
// need it are skipped). Raft messages go to Config.Transport instead.
type noPeers struct{}

func (noPeers) Send([]*raftpb.Message)      {}
func (noPeers) SendSnapshot(m snap.Message) { m.CloseWithError(errNoPeers) }
func (noPeers) Call(context.Context, uint64, uint8, []byte) ([]byte, error) {
	return nil, errNoPeers
}
func (noPeers) CallPeer(context.Context, string, uint8, []byte) ([]byte, error) {
	return nil, errNoPeers
}
func (noPeers) ReachablePeers() []string { return nil }
func (noPeers) Handle(uint8, func(context.Context, string, []byte) ([]byte, error)) {
}
func (noPeers) PeerOwns(string, []string) bool       { return false }
func (noPeers) ActiveSince(uint64) (time.Time, bool) { return time.Time{}, false }
func (noPeers) RouteChangedNotify() <-chan struct{}  { return nil }
func (noPeers) Close() error                         { return nil }

// peerHost is the Server as its Peers see it. s.running gates it: the
// fields it reads are set before New stores true.
type peerHost struct{ s *Server }

func (h peerHost) ID() uint64 {
	if !h.s.running.Load() {
		return 0
	}
	return uint64(h.s.memberID)
}

func (h peerHost) Process(ctx context.Context, m *raftpb.Message) error {
	if !h.s.running.Load() {
		return errors.New("kvstore: member not running yet")
	}
	return h.s.r.Step(ctx, m)
}

func (h peerHost) IsIDRemoved(id uint64) bool {
	return h.s.running.Load() && h.s.cluster.IsIDRemoved(types.ID(id))
}

func (h peerHost) ReportUnreachable(id uint64) {
	if h.s.running.Load() {
		h.s.r.ReportUnreachable(id)
	}
}

func (h peerHost) ReportSnapshot(id uint64, failed bool) {
	if h.s.running.Load() {
		h.s.r.ReportSnapshot(id, failed)
	}
}

func (h peerHost) SaveSnapshotDB(r io.Reader, index uint64) (int64, error) {
	if !h.s.running.Load() {
		return 0, errors.New("kvstore: member not running yet")
	}
	return h.s.r.Snapshotter().SaveDBFrom(r, index)
}

func (h peerHost) PeerURLs(id uint64) ([]string, bool) {
	if !h.s.running.Load() {
		return nil, false
	}
	return h.s.memberPeerURLs(types.ID(id))
}

// MembershipVersion changes with every applied conf change and snapshot
// restore (what changes PeerURLs' answers); 0 until the member runs, as
// PeerURLs answers nothing before.
func (h peerHost) MembershipVersion() uint64 {
	if !h.s.running.Load() {
		return 0
	}
	return h.s.membershipVersion.Load() + 1
}

func (h peerHost) RemovedMemberSends(id uint64, peer string) {
	if h.s.running.Load() {
		h.s.tellRemoved(id, peer)
	}
}

// memberPeerURLs are member id's peer URLs from the committed membership;
// before this member applied the membership (join, existing), the member
// list it bootstrapped from fills in.
func (s *Server) memberPeerURLs(id types.ID) ([]string, bool) {
	if m := s.cluster.Member(id); m != nil {
		return m.PeerURLs, true
	}
	if s.cluster.IsIDRemoved(id) {
		return nil, false
	}
	u, ok := s.bootPeers[id]
	return u, ok
}

// closePeers closes the peer transport (its network is the caller's).
func (s *Server) closePeers() {
	if err := s.peers.Close(); err != nil {
		s.lg.Warn("failed to close the peer transport", zap.Error(err))
	}
}

// activeSince is when this member last started reaching id (zero:
// unreachable). known is false without a network: strict checks that need
// connectivity are skipped then, as nothing can be known.
func (s *Server) activeSince(id types.ID) (t time.Time, known bool) {
	return s.peers.ActiveSince(uint64(id))
}

func (s *Server) numConnectedSince(since time.Time, members []*membership.Member) (n int, known bool) {
	for _, m := range members {
		if m.ID == s.memberID {
			n++
			continue
		}
		t, k := s.activeSince(m.ID)
		if !k {
			return 0, false
		}
		if !t.IsZero() && t.Before(since) {
			n++
		}
	}
	return n, true
}

// ErrRemoved is why a member that applied its own removal stopped
// (Server.Err); etcd's peers tell a removed member the same.
var ErrRemoved = errors.New("etcdserver: the member has been permanently removed from the cluster")
