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
// Hostile links (hostile.go), as a stream transport like TCP sees them:
//
//   - SetLoss(from, to, p): each write is lost with probability p and
//     retransmitted after LossRTO (200 ms, doubling), bytes behind it
//     waiting: latency spikes and lower throughput, never corruption.
//   - SetJitter(from, to, j): a random extra delay in [0, j) per write on
//     top of SetDelay, order kept (SetDelay 50 ms + SetJitter 250 ms gives
//     50–300 ms).
//   - SetOneWay(from, to, true): from → to is silently dropped while
//     to → from still works; new dials between them hang.
//   - Flap(a, b, min, max): the link goes down (silent) and up, each phase
//     lasting [min, max), until Heal(a, b) or HealAll.
//   - SetBandwidth(from, to, bytesPerSec): a slow link.
//
// Package memnet keeps no package-level state; every Network is independent.
package memnet
