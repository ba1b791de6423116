package peer

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/meshtest"
	"github.com/meshetcd/meshetcd/meshconn"
	"github.com/meshetcd/meshetcd/raftnode"
)

// waitTimeout is generous: tests share two cores with other work.
const waitTimeout = 30 * time.Second

func TestPeerNameFromURLs(t *testing.T) {
	for _, tc := range []struct {
		urls []string
		want mesh.PeerName
		err  string
	}{
		{urls: []string{"http://127.0.0.1:2380"}, want: "127.0.0.1:2380"},
		// Sorted like etcd's membership.NewMember: the first sorted URL wins.
		{urls: []string{"https://10.0.0.2:2380", "http://10.0.0.9:2380"}, want: "10.0.0.9:2380"},
		{urls: []string{"http://[::1]:2380"}, want: "[::1]:2380"},
		{urls: nil, err: "no peer URLs"},
		{urls: []string{"http://host-without-port"}, err: "missing port"},
		{urls: []string{"unix"}, err: "no host:port"},
		{urls: []string{"http://%zz"}, err: "invalid"},
	} {
		got, err := NameFromURLs(tc.urls)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NameFromURLs(%v) = %q, %v; want error containing %q", tc.urls, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NameFromURLs(%v) = %q, %v; want %q", tc.urls, got, err, tc.want)
		}
	}
}

// meshPair starts two connected routers on an in-memory network.
func meshPair(t *testing.T) (a, b *mesh.Router) {
	t.Helper()
	nw := meshtest.NewNetwork(t)
	start := func(name string, seeds ...string) *mesh.Router {
		cfg := meshtest.Config(t, mesh.PeerName(name))
		cfg.ListenAddr = name + ":2380"
		cfg.Seeds = seeds
		cfg.MaxDatagramSize = MaxDatagramSize(raftnode.DefaultMaxSizePerMsg)
		return nw.Start(name, cfg)
	}
	a = start("a")
	b = start("b", "a:2380")
	meshtest.WaitConnected(t, waitTimeout, a, b)
	return a, b
}

// fakeRaft is a Raft host that records what it was handed.
type fakeRaft struct {
	id        uint64
	mu        sync.Mutex
	processed []*raftpb.Message
	unreach   []uint64
}

func (f *fakeRaft) ID() uint64                  { return f.id }
func (f *fakeRaft) IsIDRemoved(uint64) bool     { return false }
func (f *fakeRaft) ReportSnapshot(uint64, bool) {}
func (f *fakeRaft) SaveSnapshotDB(r io.Reader, _ uint64) (int64, error) {
	return io.Copy(io.Discard, r)
}
func (f *fakeRaft) Process(_ context.Context, m *raftpb.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.processed = append(f.processed, m)
	return nil
}
func (f *fakeRaft) ReportUnreachable(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreach = append(f.unreach, id)
}

// TestMeshTransportDropsGarbage feeds undecodable and misaddressed
// datagrams to a running transport: they are counted, never processed.
func TestMeshTransportDropsGarbage(t *testing.T) {
	a, b := meshPair(t)
	host := &fakeRaft{id: 1}
	tr, err := NewRaftTransport(RaftConfig{Router: a, Raft: host,
		Resolve: func(id uint64) (mesh.PeerName, bool) { return "b", id == 2 }})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got, want := tr.MaxMessageSize(), raftnode.RequiredMessageSize(raftnode.DefaultMaxSizePerMsg); got < want {
		t.Fatalf("MaxMessageSize %d < required %d with MaxDatagramSize", got, want)
	}

	pc, err := meshconn.Listen(b, RaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := meshconn.MeshAddr{Peer: "a"}
	pc.WriteTo([]byte{0xff, 0x00, 0x13, 0x37}, to)
	other, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(99)), From: new(uint64(2))})
	pc.WriteTo(other, to)
	snapMsg, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgSnap.Enum(), To: new(uint64(1)), From: new(uint64(2))})
	pc.WriteTo(snapMsg, to)
	deadline := time.Now().Add(waitTimeout)
	for {
		st := tr.Stats()
		if st.Malformed >= 1 && st.Misaddressed >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: garbage not counted", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	host.mu.Lock()
	if len(host.processed) != 0 {
		t.Fatalf("garbage was processed: %v", host.processed)
	}
	host.mu.Unlock()

	// A message to an unknown member is reported, not sent.
	tr.Send([]*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(7)), From: new(uint64(1))}})
	if st := tr.Stats(); st.SendFailed != 1 {
		t.Fatalf("send to an unknown member: stats %+v, want one failure", st)
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	if len(host.unreach) != 1 || host.unreach[0] != 7 {
		t.Fatalf("unreachable reports %v, want [7]", host.unreach)
	}
}

// Send hands a member's messages over in order, and the member's sender
// goroutine exits once idle and comes back on the next message.
func TestMeshTransportSendsInOrderAndIdleSendersExit(t *testing.T) {
	a, b := meshPair(t)
	host := &fakeRaft{id: 1}
	tr, err := NewRaftTransport(RaftConfig{Router: a, Raft: host,
		Resolve:         func(id uint64) (mesh.PeerName, bool) { return "b", id == 2 },
		senderIdleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	pc, err := meshconn.Listen(b, RaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	senders := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.senders)
	}
	read := func(want uint64) {
		t.Helper()
		pc.SetReadDeadline(time.Now().Add(waitTimeout))
		err := pc.ReadPacketFunc(func(d []byte, _ net.Addr) {
			m := &raftpb.Message{}
			if err := proto.Unmarshal(d, m); err != nil || m.GetIndex() != want {
				t.Fatalf("got message %v (%v), want index %d", m, err, want)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	const n = 200
	var msgs []*raftpb.Message
	for i := range uint64(n) {
		msgs = append(msgs, &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: new(uint64(2)), From: new(uint64(1)), Index: new(i)})
	}
	tr.Send(msgs)
	if got := senders(); got != 1 {
		t.Fatalf("%d senders right after Send, want 1", got)
	}
	for i := range uint64(n) {
		read(i)
	}
	deadline := time.Now().Add(waitTimeout)
	for senders() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle sender never exited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.Send(msgs[:1])
	read(0)
	// The sender counts a message once WriteTo returned, which may be
	// after the receiver already has it.
	deadline = time.Now().Add(waitTimeout)
	for st := tr.Stats(); st.Sent != n+1 || st.SendFailed != 0; st = tr.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %d sent and none failed", st, n+1)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingRaft is a fakeRaft whose Process waits until release is closed:
// a member whose raft does not take messages.
type blockingRaft struct {
	fakeRaft
	release chan struct{}
}

func (b *blockingRaft) Process(ctx context.Context, m *raftpb.Message) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return b.fakeRaft.Process(ctx, m)
}

// Raft datagrams that reach a member whose raft takes none are dropped
// once the inbound queue is full, and the transport says so in its log
// instead of leaving the member silently deaf.
func TestMeshTransportReportsInboundDrops(t *testing.T) {
	a, b := meshPair(t)
	host := &blockingRaft{fakeRaft: fakeRaft{id: 1}, release: make(chan struct{})}
	core, logs := observer.New(zap.InfoLevel)
	tr, err := NewRaftTransport(RaftConfig{Router: a, Raft: host, Logger: zap.New(core),
		Resolve:         func(id uint64) (mesh.PeerName, bool) { return "b", id == 2 },
		dropReportEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	defer close(host.release)
	pc, err := meshconn.Listen(b, RaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hb, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2))})
	deadline := time.Now().Add(waitTimeout)
	for tr.Stats().PacketConn.Dropped == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: nothing dropped", tr.Stats())
		}
		for range 64 {
			_, _ = pc.WriteTo(hb, meshconn.MeshAddr{Peer: "a"}) // queue full at the sender: try again
		}
		time.Sleep(time.Millisecond)
	}
	for {
		warned := false
		for _, e := range logs.FilterMessage("raft datagrams dropped on arrival").All() {
			if e.Level == zap.WarnLevel && e.ContextMap()["inbound-queue-full"].(uint64) > 0 {
				warned = true
			}
		}
		if warned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the full inbound queue; logs: %v", logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderlessRaft blocks MsgProp in Process until release is closed, as
// raft's Step does while the member knows no leader.
type leaderlessRaft struct {
	fakeRaft
	release chan struct{}
}

func (l *leaderlessRaft) Process(ctx context.Context, m *raftpb.Message) error {
	if m.GetType() == raftpb.MsgProp {
		select {
		case <-l.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.fakeRaft.Process(ctx, m)
}

// A proposal forwarded to a member that knows no leader (it led, was cut
// off and stepped down) waits for raft without holding up the messages
// behind it, the new leader's heartbeat among them. Stepping it on the
// read loop deadlocked: raft waited for a leader that the blocked loop
// never let it hear of (the soak's pre-candidate stuck for 90 s).
func TestMeshTransportProposalDoesNotBlockOtherMessages(t *testing.T) {
	a, b := meshPair(t)
	host := &leaderlessRaft{fakeRaft: fakeRaft{id: 1}, release: make(chan struct{})}
	tr, err := NewRaftTransport(RaftConfig{Router: a, Raft: host,
		Resolve: func(id uint64) (mesh.PeerName, bool) { return "b", id == 2 }})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	released := false
	defer func() {
		if !released {
			close(host.release)
		}
	}()
	pc, err := meshconn.Listen(b, RaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	prop, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgProp.Enum(), To: new(uint64(1)), From: new(uint64(2))})
	hb, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2)), Term: new(uint64(5))})
	to := meshconn.MeshAddr{Peer: "a"}
	if _, err := pc.WriteTo(prop, to); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo(hb, to); err != nil {
		t.Fatal(err)
	}
	processed := func(typ raftpb.MessageType) bool {
		host.mu.Lock()
		defer host.mu.Unlock()
		for _, m := range host.processed {
			if m.GetType() == typ {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(waitTimeout)
	for !processed(raftpb.MsgHeartbeat) {
		if time.Now().After(deadline) {
			t.Fatalf("the heartbeat behind a blocked proposal was never processed (stats %+v)", tr.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if processed(raftpb.MsgProp) {
		t.Fatal("the proposal was processed while raft had no leader")
	}
	close(host.release)
	released = true
	for !processed(raftpb.MsgProp) {
		if time.Now().After(deadline) {
			t.Fatal("the proposal was never processed once raft took proposals again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
