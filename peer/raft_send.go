package peer

import (
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/meshconn"
)

// sendQueueLen bounds the raft messages waiting for one member's sender
// (etcd's rafthttp streamBufSize). A full queue drops the message and
// reports the member unreachable, as rafthttp does.
const sendQueueLen = 4096

// raftSender marshals and sends the raft messages for one member, in the
// order Send queued them, on its own goroutine. The Ready loop only queues:
// marshalling a batch of big entries and copying it onto the mesh took it
// ~0.5 ms per follower before the leader's own WAL write could start
// (etcd's rafthttp streams from per-peer goroutines for the same reason),
// and the followers' marshalling now runs in parallel with each other.
type raftSender struct {
	id uint64
	q  chan queuedMessage
	// buf is reused for every message: WriteTo copies what it queues.
	buf []byte
}

// senderFor returns the sender for member id, starting it on first use.
// Senders live until Close (one per member ever sent to).
func (t *RaftTransport) senderFor(id uint64) (*raftSender, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	s, ok := t.senders[id]
	if !ok {
		s = &raftSender{id: id, q: make(chan queuedMessage, sendQueueLen)}
		t.senders[id] = s
		t.wg.Add(1)
		go t.sendLoop(s)
	}
	return s, true
}

// queuedMessage is a raft message and the mesh peer of its member.
type queuedMessage struct {
	m    *raftpb.Message
	peer mesh.PeerName
}

// Send queues each message for its member's sender. A message that cannot
// be queued (a MsgSnap, an unknown member, the transport closed, or the
// member's queue full) is dropped and reported unreachable: raft never
// retries what we drop, but unreachable makes it probe instead of
// streaming into a void.
func (t *RaftTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		if err := t.queue(m); err != nil {
			t.sendFailed.Add(1)
			t.lg.Debug("raft message not sent", zap.String("to", fmt.Sprintf("%x", m.GetTo())), zap.Stringer("type", m.GetType()), zap.Error(err))
			t.raft.ReportUnreachable(m.GetTo())
		}
	}
}

var errSendQueueFull = errors.New("send queue full")

func (t *RaftTransport) queue(m *raftpb.Message) error {
	if m.GetType() == raftpb.MsgSnap {
		return errors.New("MsgSnap must go through SendSnapshot")
	}
	name, ok := t.peer(m.GetTo())
	if !ok {
		return fmt.Errorf("member %x is not in the membership", m.GetTo())
	}
	s, ok := t.senderFor(m.GetTo())
	if !ok {
		return net.ErrClosed
	}
	select {
	case s.q <- queuedMessage{m: m, peer: name}:
		return nil
	default:
		return errSendQueueFull
	}
}

// sendLoop sends s's queued messages until the transport closes.
func (t *RaftTransport) sendLoop(s *raftSender) {
	defer t.wg.Done()
	for {
		select {
		case qm := <-s.q:
			if err := s.send(t.pc, qm); err != nil {
				t.sendFailed.Add(1)
				t.lg.Debug("raft message not sent", zap.String("to", fmt.Sprintf("%x", s.id)), zap.Stringer("type", qm.m.GetType()), zap.Error(err))
				t.raft.ReportUnreachable(s.id)
				continue
			}
			t.sent.Add(1)
		case <-t.ctx.Done():
			return
		}
	}
}

// maxKeptSendBuf: a sender keeps its marshal buffer between messages up
// to this size, so one big append does not pin MaxDatagramSize per member.
const maxKeptSendBuf = 1 << 20

// send marshals qm's message into s's buffer and queues it on the mesh.
func (s *raftSender) send(pc *meshconn.PacketConn, qm queuedMessage) error {
	b, err := proto.MarshalOptions{}.MarshalAppend(s.buf[:0], qm.m)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	if cap(b) <= maxKeptSendBuf {
		s.buf = b
	}
	if _, err := pc.WriteTo(b, meshconn.MeshAddr{Peer: qm.peer}); err != nil {
		return fmt.Errorf("to %s: %w", qm.peer, err)
	}
	return nil
}
