// Package memnet is an in-memory stream network for testing the mesh router
// (and anything built on it) without sockets, with fault injection per link.
//
// A Network holds named hosts. Host.Listen and Host.Dial have the same shape
// as mesh.Transport, so a *Host plugs into mesh.Config.Transport. Connections
// are buffered byte pipes (like a TCP socket buffer pair) that honour read and
// write deadlines, so a full buffer blocks the writer exactly like a peer that
// stopped reading.
//
// Faults are set between hosts at any time and apply to existing and new
// connections:
//
//   - Cut: resets existing connections (both ends see an error) and refuses
//     new dials, like a firewall sending RST.
//   - Blackhole: data is accepted but never delivered and dials hang, like a
//     link that went silent; writers block once the buffer fills, and
//     Heal releases what was buffered, like TCP retransmission.
//   - Partition: Cut between every pair of hosts in different groups.
//   - SetDelay / SetDropRate: per-direction latency and loss of whole writes.
//     A dropped write corrupts a byte stream, which a framed, authenticated
//     protocol must detect.
//   - StallReads / SetReadRate: a host whose reads never complete, or are
//     limited to a byte rate (a slow reader).
//
// Package memnet keeps no package-level state; every Network is independent.
package memnet
