// Package raftnet is an in-memory network of raft messages for tests of
// raftnode and kvstore: one FIFO queue and delivery goroutine per member,
// like a mesh link, with optional loss of forwarded proposals. It carries
// raft messages only (no peer requests); the member-level transport over
// the mesh is the peer package's. Only tests import it.
package raftnet
