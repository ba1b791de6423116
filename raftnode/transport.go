package raftnode

import (
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
)

// Transport carries raft messages from this member to the other members.
// A one-member cluster runs without one (nil). MeshTransport implements it
// over the mesh.
//
// Contract: neither method blocks the Ready loop. Send is called from the
// Ready loop and SendSnapshot from the apply goroutine, concurrently. A message that cannot be
// delivered is dropped and reported back through the Reporter the transport
// was built with (ReportUnreachable, ReportSnapshot), because raft itself
// never retries a message the transport dropped.
//
// The Reporter is the *Node (kvstore: Server.Raft()), which exists only once
// kvstore.New returned; a transport handed to kvstore.Config binds it then.
// Messages it is asked to send before that may be dropped unreported: raft
// re-sends on the next heartbeat. Incoming messages go to Node.Step; an
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
