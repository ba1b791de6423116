package raftnode

import (
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
)

// Transport carries raft messages from this member to the other members.
// A one-member cluster runs without one (nil). The peer package implements
// it over the mesh.
//
// Contract: neither method blocks the Ready loop. Send is called from the
// Ready loop and SendSnapshot from the apply goroutine, concurrently. A message that cannot be
// delivered is dropped and reported back through the Reporter the transport
// was built with (ReportUnreachable, ReportSnapshot), because raft itself
// never retries a message the transport dropped.
//
// The transport is built with whatever it reports to (kvstore hands it the
// member, which forwards to the Node once it runs); messages it cannot
// deliver before that may be dropped unreported: raft re-sends on the next
// heartbeat. Incoming messages go to Node.Step; an
// incoming MsgSnap's database is first saved with
// Node.Snapshotter().SaveDBFrom(body, m.Snapshot.Metadata.Index), and
// SendSnapshot must close the snap.Message (CloseWithError) when done.
type Transport interface {
	// Send hands ordinary raft messages (never MsgSnap) to the network.
	Send(msgs []*raftpb.Message)
	// SendSnapshot streams a MsgSnap together with the backend database it
	// describes, and reports the outcome with ReportSnapshot.
	SendSnapshot(m snap.Message)
}

// Reporter is what a Transport tells raft about delivery; *Node implements it.
type Reporter interface {
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, failed bool)
}

// messageSizeChecker is implemented by transports with a per-message size
// limit; Create and Restart refuse a MaxSizePerMsg the transport can't carry.
type messageSizeChecker interface {
	MaxMessageSize() int
}

// RequiredMessageSize is the largest marshalled raft message a member with
// this MaxSizePerMsg can produce (an entry batch of MaxSizePerMsg bytes of
// entries plus protobuf framing: at worst ~25% for tiny entries, plus the
// message header).
func RequiredMessageSize(maxSizePerMsg uint64) int {
	if maxSizePerMsg == 0 {
		maxSizePerMsg = DefaultMaxSizePerMsg
	}
	return int(maxSizePerMsg + maxSizePerMsg/4 + 4<<10)
}
