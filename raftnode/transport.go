package raftnode

import (
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
)

// Transport carries raft messages from this member to the other members.
// A one-member cluster runs without one (nil). The mesh transport that
// implements it lives beside this file once multi-member clusters exist.
//
// Contract: neither method blocks the Ready loop. A message that cannot be
// delivered is dropped and reported back through the Reporter the transport
// was built with (ReportUnreachable, ReportSnapshot), because raft itself
// never retries a message the transport dropped.
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
