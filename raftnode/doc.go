// Package raftnode owns consensus for one member: it drives a
// go.etcd.io/raft/v3 raft.Node, persists it with etcd's WAL and snapshot
// files (storage/wal, etcdserver/api/snap through storage.NewStorage),
// recovers it on restart, snapshots and compacts the raft log, and hands
// committed entries to the state machine through the Applier interface. It
// never imports the state machine (kvstore).
//
// # Lifecycle
//
// Create (no WAL yet: writes WAL metadata with the member and cluster ids,
// then raft.StartNode with the bootstrap peers, or RestartNode with none to
// join) or Restart (reads the newest WAL snapshot record, replays the WAL,
// repairs a torn tail once, and restarts raft with the ConfState the state
// machine hands in) return an idle *Node. Start(applier) runs it; Stop stops
// it and closes the WAL. A failing WAL or snapshot write is fatal: the node
// logs it, stops without advancing raft (so the write is never reported
// committed), and closes Done; Err tells why.
//
// # The Ready contract as implemented (etcd's raftNode.start order)
//
// For every raft.Ready, on the Ready loop goroutine:
//
//  1. SoftState: record the leader, call Applier.LeadershipChanged, and
//     notify LeaderChangedNotify watchers when a new leader emerged.
//  2. ReadStates: the last one goes to ReadState() (for the ReadIndex loop).
//  3. CommittedEntries and an incoming Snapshot are queued to the apply
//     goroutine, with a notify channel for durability.
//  4. Leader: send Messages now (disk write in parallel with replication).
//  5. Snapshot: save the .snap file and WAL snapshot record first.
//  6. Save HardState and Entries to the WAL (fsync when raft requires).
//  7. Snapshot: fsync, signal "durable", load it into MemoryStorage, release
//     older WAL segments.
//  8. Append Entries to MemoryStorage.
//  9. Follower/candidate: signal "persisted", wait until committed conf
//     changes are applied, then send Messages.
//  10. Advance.
//
// Messages to removed members are dropped; only the newest MsgAppResp is
// kept; MsgSnap is never sent as is: the apply goroutine attaches a
// database snapshot taken at its applied index and hands it to
// Transport.SendSnapshot, pausing log compaction while it is in flight.
// A follower's forwarded MsgProps to one destination are merged into one
// (coalesceProposals), and a leader's MsgApps to one follower that continue
// each other exactly are merged too (coalesceAppends): raft emits one per
// proposal, and each would cost a datagram and a follower Step.
// With a nil Transport (one member) nothing is sent.
//
// On the apply goroutine, per batch: apply an incoming snapshot once it is
// durable (Applier.ApplySnapshot), then the entries above the applied index
// (Applier.ApplyEntries), trigger ApplyWait, wait until the batch is
// persisted, and every SnapshotCount applied entries take a raft snapshot
// (Applier.SnapshotData first commits the state machine), save it, release
// the WAL and compact the in-memory log to applied-SnapshotCatchUpEntries.
//
// # Plugging in a transport
//
// Config.Transport receives outgoing messages and must never block; it
// reports failures through the Node's Reporter methods (ReportUnreachable,
// ReportSnapshot). Incoming messages go to Node.Step; an incoming MsgSnap's
// database is saved with Node.Snapshotter().SaveDBFrom(r, index) before the
// message is stepped. A transport with a message size limit
// (MaxMessageSize) makes Create and Restart refuse a MaxSizePerMsg it
// cannot carry: RequiredMessageSize(MaxSizePerMsg) must fit.
//
// raftnode knows nothing of the network: the peer package implements
// Transport over the mesh, and kvstore wires the two together (it hands
// the transport the member, which steps into the Node). Tests run several
// nodes on the raft-message network of internal/raftnet.
package raftnode
