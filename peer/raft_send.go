package peer

import (
	"errors"
	"fmt"
	"net"
	"time"

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
// marshalling a batch of big entries and copying it onto the mesh, once
// per follower, used to run on it ahead of the leader's own WAL write
// (etcd's rafthttp streams from per-peer goroutines for the same reason),
// and the followers' messages are now encoded in parallel.
type raftSender struct {
	id uint64
	q  chan queuedMessage
	// buf is reused for every message: WriteTo copies what it queues.
	buf []byte
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
			t.notSent(m, err)
		}
	}
}

// notSent counts a raft message that was dropped, whether Send could not
// queue it or its sender could not send it, and reports its member
// unreachable.
func (t *RaftTransport) notSent(m *raftpb.Message, err error) {
	t.sendFailed.Add(1)
	t.lg.Debug("raft message not sent", zap.String("to", fmt.Sprintf("%x", m.GetTo())), zap.Stringer("type", m.GetType()), zap.Error(err))
	t.raft.ReportUnreachable(m.GetTo())
}

var errSendQueueFull = errors.New("send queue full")

func (t *RaftTransport) queue(m *raftpb.Message) error {
	if m.GetType() == raftpb.MsgSnap {
		return errors.New("MsgSnap must go through SendSnapshot")
	}
	id := m.GetTo()
	name, ok := t.peer(id)
	if !ok {
		return fmt.Errorf("member %x is not in the membership", id)
	}
	// Under mu, so an idle sender cannot exit between being looked up
	// and being handed the message (see sendLoop).
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return net.ErrClosed
	}
	s, ok := t.senders[id]
	if !ok {
		s = &raftSender{id: id, q: make(chan queuedMessage, sendQueueLen)}
		t.senders[id] = s
		t.wg.Add(1)
		go t.sendLoop(s)
	}
	select {
	case s.q <- queuedMessage{m: m, peer: name}:
		return nil
	default:
		return errSendQueueFull
	}
}

// senderIdleInterval is how long a sender with nothing to send lives on: a
// member's sender to a removed member, or a follower's to members it
// no longer votes for, does not keep its goroutine and queue for ever.
// An active peer gets heartbeats far more often.
const senderIdleInterval = 30 * time.Second

// sendLoop sends s's queued messages until the transport closes or s has
// been idle for a whole senderIdleEvery period.
func (t *RaftTransport) sendLoop(s *raftSender) {
	defer t.wg.Done()
	idle := time.NewTicker(t.senderIdleEvery)
	defer idle.Stop()
	active := false
	for {
		select {
		case qm := <-s.q:
			active = true
			if err := s.send(t.pc, qm); err != nil {
				t.notSent(qm.m, err)
				continue
			}
			t.sent.Add(1)
		case <-idle.C:
			if active {
				active = false
				continue
			}
			t.mu.Lock()
			if len(s.q) == 0 {
				delete(t.senders, s.id)
				t.mu.Unlock()
				return
			}
			t.mu.Unlock()
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
