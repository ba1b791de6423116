package peer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/etcd/pkg/v3/notify"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/meshconn"
	"github.com/meshetcd/meshetcd/raftnode"
)

// Raft is the member a RaftTransport delivers to (etcd's rafthttp.Raft):
// incoming messages are processed, delivery failures reported, and a
// received snapshot's database saved before its MsgSnap is processed.
type Raft interface {
	// ID is this member's raft id; 0 while the member is not running yet,
	// and messages that arrive then are dropped (raft re-sends them).
	ID() uint64
	Process(ctx context.Context, m *raftpb.Message) error
	IsIDRemoved(id uint64) bool
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, failed bool)
	// SaveSnapshotDB stores a received snapshot's database durably as the
	// database of the snapshot at index (snap.Snapshotter.SaveDBFrom).
	SaveSnapshotDB(r io.Reader, index uint64) (int64, error)
}

// RaftConfig configures a RaftTransport.
type RaftConfig struct {
	Logger *zap.Logger // nil: zap.NewNop()
	// Router is the member's running mesh router. The transport never stops
	// it; the caller (embed) owns it and stops it after Close.
	Router *mesh.Router
	// Raft receives what arrives and hears about delivery failures.
	Raft Raft
	// Resolve maps a member id to the mesh peer that runs it (ok false for
	// an unknown or removed member).
	Resolve func(id uint64) (peer mesh.PeerName, ok bool)
	// MembershipVersion, when set, changes whenever Resolve's answers may
	// change (a membership change); while it returns the same non-zero
	// value the transport reuses Resolve's answer per member id instead of
	// resolving (a member lookup and a URL parse) for every message sent.
	// Nil or 0: resolve every message.
	MembershipVersion func() uint64
	// RaftChannel and BulkChannel default to RaftChannel and BulkChannel;
	// every member must use the same ones.
	RaftChannel mesh.ChannelID
	BulkChannel mesh.ChannelID
	// Bulk tunes snapshot transfers (its Handler and Logger are set by the
	// transport). Zero values take meshconn's defaults.
	Bulk meshconn.BulkConfig
	// OnRemovedSender, when set, is called (at most once per second per
	// sender) when a member that was removed from the cluster still sends
	// raft messages, typically because it was down when its removal was
	// committed. kvstore tells it so, like etcd's peers answer it 410 Gone.
	OnRemovedSender func(id uint64, peer mesh.PeerName)

	// dropReportEvery overrides dropReportInterval (tests).
	dropReportEvery time.Duration
	// senderIdleEvery overrides senderIdleInterval (tests).
	senderIdleEvery time.Duration
}

// RaftTransport is raftnode's Transport over the mesh: ordinary raft
// messages are datagrams on a meshconn.PacketConn, MsgSnap plus the backend
// database stream through meshconn.Bulk. Close it after the member stopped
// and before the router stops.
type RaftTransport struct {
	lg   *zap.Logger
	r    *mesh.Router
	pc   *meshconn.PacketConn
	bulk *meshconn.Bulk

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	raft       Raft
	resolve    func(id uint64) (mesh.PeerName, bool)
	membership func() uint64 // nil: never cache

	mu     sync.Mutex
	closed bool
	// names caches id → peer for route events (which speak peer names)
	// and, at the membership version it was resolved at, for sending.
	names map[uint64]resolvedPeer
	// since is when each reachable peer last became reachable.
	since map[mesh.PeerName]time.Time
	// removedTold rate-limits OnRemovedSender per sender (readLoop only).
	removedTold map[uint64]time.Time
	onRemoved   func(id uint64, peer mesh.PeerName)
	// routeChanged is notified on every route event.
	routeChanged *notify.Notifier
	// senders hold each member's outgoing raft messages (raft_send.go);
	// one idle for senderIdleEvery exits.
	senders         map[uint64]*raftSender
	senderIdleEvery time.Duration

	// dropReportEvery is how often watchRoutes checks the receive
	// counters and warns about raft datagrams dropped before raft saw
	// them (dropReportInterval; shorter in tests).
	dropReportEvery time.Duration

	// props carries received MsgProp to propLoop: raft's Step blocks a
	// proposal while this member knows no leader, so stepping it on the
	// read loop would stop every other raft message, the ones that would
	// tell it the leader included (etcd's rafthttp steps proposals on
	// their own goroutine for the same reason).
	props chan *raftpb.Message

	// Counters (see Stats).
	sent, sendFailed, received, malformed, misaddressed atomic.Uint64
	proposalsDropped                                    atomic.Uint64
	snapsSent, snapsFailed, snapsReceived               atomic.Uint64
}

// RaftStats counts a RaftTransport's traffic.
type RaftStats struct {
	Sent, SendFailed                  uint64 // raft datagrams
	Received, Malformed, Misaddressed uint64
	// ProposalsDropped counts received MsgProp dropped because
	// maxPendingProposals were already waiting for raft (no leader).
	ProposalsDropped               uint64
	SnapshotsSent, SnapshotsFailed uint64
	SnapshotsReceived              uint64
	PacketConn                     meshconn.PacketStats
}

var _ raftnode.Transport = (*RaftTransport)(nil)

// NewRaftTransport opens the raft datagram and bulk channels on cfg.Router
// and starts delivering to cfg.Raft.
func NewRaftTransport(cfg RaftConfig) (*RaftTransport, error) {
	if cfg.Router == nil {
		return nil, errors.New("peer: RaftTransport needs a mesh router")
	}
	if cfg.Raft == nil || cfg.Resolve == nil {
		return nil, errors.New("peer: RaftTransport needs Raft and Resolve")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.RaftChannel == 0 {
		cfg.RaftChannel = RaftChannel
	}
	if cfg.BulkChannel == 0 {
		cfg.BulkChannel = BulkChannel
	}
	t := &RaftTransport{lg: cfg.Logger.Named("raft-mesh"), r: cfg.Router, raft: cfg.Raft, resolve: cfg.Resolve, membership: cfg.MembershipVersion,
		names: map[uint64]resolvedPeer{}, senders: map[uint64]*raftSender{}, since: map[mesh.PeerName]time.Time{},
		removedTold: map[uint64]time.Time{}, onRemoved: cfg.OnRemovedSender, routeChanged: notify.NewNotifier(),
		dropReportEvery: cmp.Or(cfg.dropReportEvery, dropReportInterval),
		senderIdleEvery: cmp.Or(cfg.senderIdleEvery, senderIdleInterval),
		props:           make(chan *raftpb.Message, maxPendingProposals)}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	pc, err := meshconn.Listen(cfg.Router, cfg.RaftChannel, meshconn.PacketConfig{Logger: t.lg})
	if err != nil {
		t.cancel()
		return nil, fmt.Errorf("peer: open raft channel %d: %w", cfg.RaftChannel, err)
	}
	t.pc = pc
	bcfg := cfg.Bulk
	bcfg.Handler = t.receiveSnapshot
	bcfg.Logger = t.lg
	bulk, err := meshconn.NewBulk(cfg.Router, cfg.BulkChannel, bcfg)
	if err != nil {
		pc.Close()
		t.cancel()
		return nil, fmt.Errorf("peer: open snapshot channel %d: %w", cfg.BulkChannel, err)
	}
	t.bulk = bulk
	routes, cancel := t.r.SubscribeRoutes(64)
	t.wg.Add(3)
	go t.readLoop()
	go t.propLoop()
	go t.watchRoutes(routes, cancel)
	return t, nil
}

// MaxMessageSize is the largest marshalled raft message this transport
// carries; raftnode refuses a MaxSizePerMsg that needs more.
func (t *RaftTransport) MaxMessageSize() int { return t.pc.MaxDatagramSize() }

// Close stops receiving and aborts snapshot transfers in both directions;
// it waits for the transport's goroutines. Idempotent.
func (t *RaftTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	err := errors.Join(t.pc.Close(), t.bulk.Close())
	t.wg.Wait()
	return err
}

// ActiveSince is when peer last became reachable over the mesh (etcd's
// Transport.ActiveSince, used for strict reconfiguration checks and to pick
// a leader transferee); zero when it is unreachable now.
func (t *RaftTransport) activeSince(peer mesh.PeerName) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.since[peer]
}

// RouteChangedNotify returns a channel closed at the next change of any
// mesh route (a peer became reachable or unreachable, or the path to it
// changed). Datagrams in flight on a route that died are lost; kvstore
// re-proposes pending requests then (their duplicates are skipped at apply).
func (t *RaftTransport) RouteChangedNotify() <-chan struct{} { return t.routeChanged.Receive() }

// Stats returns the traffic counters.
func (t *RaftTransport) Stats() RaftStats {
	return RaftStats{
		Sent: t.sent.Load(), SendFailed: t.sendFailed.Load(),
		Received: t.received.Load(), Malformed: t.malformed.Load(), Misaddressed: t.misaddressed.Load(),
		ProposalsDropped: t.proposalsDropped.Load(),
		SnapshotsSent:    t.snapsSent.Load(), SnapshotsFailed: t.snapsFailed.Load(), SnapshotsReceived: t.snapsReceived.Load(),
		PacketConn: t.pc.Stats(),
	}
}

// resolvedPeer is a member's mesh peer and the membership version it was
// resolved at (0: not reusable for sending).
type resolvedPeer struct {
	name    mesh.PeerName
	version uint64
}

// peer resolves id (or reuses the answer resolved at the current
// membership version) and remembers it for route events.
func (t *RaftTransport) peer(id uint64) (mesh.PeerName, bool) {
	var version uint64
	if t.membership != nil {
		// Read before resolving: a change in between makes the next
		// message resolve again.
		version = t.membership()
	}
	t.mu.Lock()
	if p, ok := t.names[id]; ok && version != 0 && p.version == version {
		t.mu.Unlock()
		return p.name, true
	}
	t.mu.Unlock()
	name, ok := t.resolve(id)
	t.mu.Lock()
	if ok {
		t.names[id] = resolvedPeer{name: name, version: version}
	} else {
		delete(t.names, id)
	}
	t.mu.Unlock()
	return name, ok
}

func (t *RaftTransport) readLoop() {
	defer t.wg.Done()
	n := t.raft
	for {
		// Decoded straight out of the PacketConn's buffer (Unmarshal
		// copies what it keeps): a big append is not copied out first.
		var (
			m         *raftpb.Message
			from      net.Addr
			decodeErr error
		)
		err := t.pc.ReadPacketFunc(func(d []byte, src net.Addr) {
			from, m = src, &raftpb.Message{}
			decodeErr = proto.Unmarshal(d, m)
		})
		if err != nil {
			if errors.Is(err, net.ErrClosed) || t.ctx.Err() != nil {
				return
			}
			// A one-off: count it and go on.
			t.malformed.Add(1)
			continue
		}
		if decodeErr != nil {
			t.malformed.Add(1)
			t.lg.Debug("dropped undecodable raft datagram", zap.Stringer("from", from), zap.Error(decodeErr))
			continue
		}
		if m.GetTo() != n.ID() || m.GetType() == raftpb.MsgSnap {
			// A misrouted message (a peer name reused by another member,
			// or the member is not running yet: ID 0) or a snapshot
			// without its database: never step it.
			t.misaddressed.Add(1)
			continue
		}
		t.received.Add(1)
		if t.onRemoved != nil && n.IsIDRemoved(m.GetFrom()) {
			if now := time.Now(); now.Sub(t.removedTold[m.GetFrom()]) > time.Second {
				t.removedTold[m.GetFrom()] = now
				if a, ok := from.(meshconn.MeshAddr); ok {
					t.onRemoved(m.GetFrom(), a.Peer)
				}
			}
			continue
		}
		if m.GetType() == raftpb.MsgProp {
			select {
			case t.props <- m:
			default:
				t.proposalsDropped.Add(1) // the proposer re-proposes
			}
			continue
		}
		if err := n.Process(t.ctx, m); err != nil && t.ctx.Err() == nil {
			t.lg.Debug("raft refused message", zap.Stringer("from", from), zap.Error(err))
		}
	}
}

// maxPendingProposals bounds the forwarded proposals waiting for raft
// (etcd's rafthttp value: enough for every proposer during an election).
const maxPendingProposals = 4096

// propLoop steps the proposals other members forwarded to us. Step may
// block while we know no leader, which must not hold up readLoop (see
// props): a member that led, was cut off and stepped down would otherwise
// never hear the new leader once a forwarded proposal reached it (the
// stuck pre-candidate of soak seed 1796613346906798829).
func (t *RaftTransport) propLoop() {
	defer t.wg.Done()
	n := t.raft
	for {
		select {
		case m := <-t.props:
			if err := n.Process(t.ctx, m); err != nil && t.ctx.Err() == nil {
				t.lg.Debug("raft refused a forwarded proposal", zap.String("from", fmt.Sprintf("%x", m.GetFrom())), zap.Error(err))
			}
		case <-t.ctx.Done():
			return
		}
	}
}

// watchRoutes reports members whose mesh peer became unreachable, so the
// leader stops pipelining to them at once (etcd does this when a stream
// breaks). Reachability never changes membership.
func (t *RaftTransport) watchRoutes(events <-chan mesh.RouteEvent, cancel func()) {
	defer t.wg.Done()
	defer cancel()
	n := t.raft
	tick := time.NewTicker(t.dropReportEvery)
	defer tick.Stop()
	var reported receiveDrops
	for {
		select {
		case <-tick.C:
			t.reportDrops(&reported)
		case ev, ok := <-events:
			if !ok {
				return
			}
			t.routeChanged.Notify()
			t.mu.Lock()
			if ev.Reachable {
				if _, ok := t.since[ev.Peer]; !ok {
					t.since[ev.Peer] = time.Now()
				}
				t.mu.Unlock()
				continue
			}
			delete(t.since, ev.Peer)
			var ids []uint64
			for id, p := range t.names {
				if p.name == ev.Peer {
					ids = append(ids, id)
				}
			}
			t.mu.Unlock()
			for _, id := range ids {
				t.lg.Info("raft peer unreachable on the mesh", zap.String("member-id", fmt.Sprintf("%x", id)), zap.String("peer", string(ev.Peer)))
				n.ReportUnreachable(id)
			}
		case <-t.ctx.Done():
			return
		}
	}
}

// dropReportInterval is how often the transport looks for raft datagrams
// that reached this member but were dropped before raft saw them.
const dropReportInterval = 5 * time.Second

// receiveDrops are the receive-side drop counters at the last report.
type receiveDrops struct{ queueFull, malformed, misaddressed, proposals uint64 }

// reportDrops logs the raft datagrams dropped on arrival since the last
// report, if any: a full inbound queue (raft not taking messages as fast
// as they come, or not at all), undecodable ones, and misaddressed ones
// (for another member, or arriving before the member runs). A member
// whose raft hears nothing while its mesh links are up leaves this line
// (with the total received so far) instead of silence.
func (t *RaftTransport) reportDrops(last *receiveDrops) {
	st := t.Stats()
	cur := receiveDrops{queueFull: st.PacketConn.Dropped, malformed: st.Malformed, misaddressed: st.Misaddressed,
		proposals: st.ProposalsDropped}
	if cur == *last {
		return
	}
	fields := []zap.Field{zap.Uint64("inbound-queue-full", cur.queueFull-last.queueFull),
		zap.Uint64("malformed", cur.malformed-last.malformed), zap.Uint64("misaddressed", cur.misaddressed-last.misaddressed),
		zap.Uint64("proposals-pending-full", cur.proposals-last.proposals),
		zap.Uint64("received-total", st.Received), zap.Duration("interval", t.dropReportEvery)}
	if cur.queueFull != last.queueFull || cur.malformed != last.malformed || cur.proposals != last.proposals {
		t.lg.Warn("raft datagrams dropped on arrival", fields...)
	} else {
		t.lg.Info("raft datagrams dropped on arrival", fields...)
	}
	*last = cur
}

// SendSnapshot streams the marshalled MsgSnap (as the transfer's meta) and
// the database (as its body) with Bulk, on its own goroutine, and reports
// the outcome truthfully once the receiver accepted or refused it.
func (t *RaftTransport) SendSnapshot(m snap.Message) {
	n := t.raft
	to := m.GetTo()
	fail := func(err error) {
		t.snapsFailed.Add(1)
		t.lg.Warn("database snapshot not sent", zap.String("to", fmt.Sprintf("%x", to)), zap.Error(err))
		m.CloseWithError(err)
		n.ReportSnapshot(to, true)
	}
	name, ok := t.peer(to)
	if !ok {
		fail(fmt.Errorf("member %x is not in the membership", to))
		return
	}
	meta, err := proto.Marshal(m.Message)
	if err != nil {
		fail(fmt.Errorf("marshal MsgSnap: %w", err))
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		fail(meshconn.ErrClosed)
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		err := t.bulk.Send(t.ctx, name, meta, m.ReadCloser)
		if err != nil {
			fail(fmt.Errorf("to %s: %w", name, err))
			return
		}
		t.snapsSent.Add(1)
		t.lg.Info("database snapshot sent", zap.String("to", fmt.Sprintf("%x", to)), zap.String("peer", string(name)),
			zap.Uint64("snapshot-index", m.Snapshot.GetMetadata().GetIndex()), zap.Int64("bytes", m.TotalSize))
		m.CloseWithError(nil)
		n.ReportSnapshot(to, false)
	}()
}

// receiveSnapshot is the Bulk handler: it saves the database durably as
// <index>.snap.db while it arrives, then steps the MsgSnap; raft then
// persists the snapshot and the state machine swaps the database in.
func (t *RaftTransport) receiveSnapshot(ctx context.Context, in *meshconn.Incoming) error {
	n := t.raft
	if n.ID() == 0 {
		return errors.New("member not running yet")
	}
	m := &raftpb.Message{}
	if err := proto.Unmarshal(in.Meta, m); err != nil {
		t.malformed.Add(1)
		return fmt.Errorf("undecodable MsgSnap: %w", err)
	}
	if m.GetType() != raftpb.MsgSnap || m.GetTo() != n.ID() || m.GetSnapshot() == nil {
		t.misaddressed.Add(1)
		return fmt.Errorf("not a MsgSnap for member %x", n.ID())
	}
	idx := m.GetSnapshot().GetMetadata().GetIndex()
	size, err := n.SaveSnapshotDB(in.Body, idx)
	if err != nil {
		return fmt.Errorf("save snapshot database %d: %w", idx, err)
	}
	if err := n.Process(ctx, m); err != nil {
		return fmt.Errorf("step MsgSnap %d: %w", idx, err)
	}
	t.snapsReceived.Add(1)
	t.lg.Info("received database snapshot", zap.String("from", string(in.Src)), zap.Uint64("snapshot-index", idx), zap.Int64("bytes", size))
	return nil
}
