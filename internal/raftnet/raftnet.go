package raftnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
)

// Node is a member on the network; *raftnode.Node satisfies it.
type Node interface {
	ID() uint64
	Step(ctx context.Context, m *raftpb.Message) error
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, failed bool)
	Snapshotter() *snap.Snapshotter
}

// queueLen bounds each member's inbound queue; a full queue drops (and
// reports) like a congested link.
const queueLen = 4096

// Network connects in-process members. Members Register once they exist;
// messages to unregistered (or stopped) members are dropped and reported
// to their sender as unreachable.
type Network struct {
	mu      sync.Mutex
	nodes   map[uint64]Node
	queues  map[uint64]chan queued
	stopc   chan struct{}
	wg      sync.WaitGroup
	stopped bool
	// dropProps: this many forwarded proposals (MsgProp) are lost
	// silently, like a datagram a relaying mesh member drops.
	dropProps atomic.Int32
	// delay holds every message this long (nanoseconds) before delivery,
	// like a link's one-way latency.
	delay atomic.Int64
}

// queued is a message and when it may be delivered.
type queued struct {
	m   *raftpb.Message
	due time.Time
}

// New returns an empty network; Close stops its delivery goroutines.
func New() *Network {
	return &Network{nodes: map[uint64]Node{}, queues: map[uint64]chan queued{}, stopc: make(chan struct{})}
}

// Close stops delivery and waits for the network's goroutines. Idempotent.
func (n *Network) Close() {
	n.mu.Lock()
	if !n.stopped {
		n.stopped = true
		close(n.stopc)
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// Register attaches node (again, after a restart) under its id.
func (n *Network) Register(node Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := node.ID()
	n.nodes[id] = node
	if _, ok := n.queues[id]; ok || n.stopped {
		return
	}
	q := make(chan queued, queueLen)
	n.queues[id] = q
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case qm := <-q:
				// One delay for all keeps the queue in due order.
				if wait := time.Until(qm.due); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-n.stopc:
						t.Stop()
						return
					}
				}
				if dst := n.node(id); dst != nil {
					_ = dst.Step(context.Background(), qm.m)
				}
			case <-n.stopc:
				return
			}
		}
	}()
}

// Unregister detaches member id: messages to it are lost from now on.
func (n *Network) Unregister(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, id)
}

// SetDelay holds every message sent from now on for d before it is
// delivered (a one-way link latency); 0 delivers at once.
func (n *Network) SetDelay(d time.Duration) { n.delay.Store(int64(d)) }

// DropProposals makes the network lose the next k forwarded proposals.
func (n *Network) DropProposals(k int32) { n.dropProps.Store(k) }

// ProposalDropsLeft is how many of the proposals DropProposals asked to
// lose have not been lost yet.
func (n *Network) ProposalDropsLeft() int32 { return n.dropProps.Load() }

func (n *Network) takeDrop() bool {
	for {
		v := n.dropProps.Load()
		if v <= 0 {
			return false
		}
		if n.dropProps.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

func (n *Network) node(id uint64) Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodes[id]
}

// Transport is the network as raftnode.Transport: what a member sends goes
// to the addressee's queue, and failures are reported to the sender (the
// registered member the message is from).
func (n *Network) Transport() *Transport { return &Transport{net: n} }

// Transport is one member's way onto a Network (raftnode.Transport).
type Transport struct{ net *Network }

// Send queues each message for its addressee, never blocking.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgProp && t.net.takeDrop() {
			continue
		}
		t.net.mu.Lock()
		q, ok := t.net.queues[m.GetTo()]
		_, alive := t.net.nodes[m.GetTo()]
		t.net.mu.Unlock()
		delivered := false
		if ok && alive {
			select {
			case q <- queued{m: m, due: time.Now().Add(time.Duration(t.net.delay.Load()))}:
				delivered = true
			default:
			}
		}
		if !delivered {
			if r := t.net.node(m.GetFrom()); r != nil {
				r.ReportUnreachable(m.GetTo())
			}
		}
	}
}

// SendSnapshot saves the database at the addressee and steps the MsgSnap
// there, on its own goroutine, then reports the outcome to the sender.
func (t *Transport) SendSnapshot(m snap.Message) {
	to, from := m.GetTo(), m.GetFrom()
	t.net.mu.Lock()
	stopped := t.net.stopped
	if !stopped {
		t.net.wg.Add(1)
	}
	t.net.mu.Unlock()
	if stopped {
		m.CloseWithError(errors.New("network stopped"))
		return
	}
	go func() {
		defer t.net.wg.Done()
		err := func() error {
			dst := t.net.node(to)
			if dst == nil {
				return fmt.Errorf("member %x unreachable", to)
			}
			if _, err := dst.Snapshotter().SaveDBFrom(m.ReadCloser, m.Snapshot.GetMetadata().GetIndex()); err != nil {
				return err
			}
			return dst.Step(context.Background(), m.Message)
		}()
		m.CloseWithError(err)
		if r := t.net.node(from); r != nil {
			r.ReportSnapshot(to, err != nil)
		}
	}()
}
