// Package meshconn adapts the mesh router's unicast datagram channels to
// what the Raft transport needs.
//
// Two services live here, each on its own mesh datagram channel:
//
//   - PacketConn: a net.PacketConn over an interactive-priority datagram channel.
//     Addresses are MeshAddr values ("mesh://<peer-name>"). Delivery is at
//     most once; each datagram arrives intact or not at all (a CRC32C and an
//     explicit length guard every datagram end to end, on top of whatever
//     the links do); datagrams between one (src, dst) pair arrive in the
//     order they were written while the mesh route between them is stable,
//     and may be lost or reordered when the route changes. Nothing is
//     duplicated by meshconn. WriteTo never blocks; ReadFrom blocks on a
//     bounded inbound queue that drops the newest arrival (and counts it)
//     when full, so a slow reader never stalls the router. A datagram's
//     bytes are copied once on each side: WriteTo hands its header and b
//     to the mesh separately (mesh.DatagramChannel.SendWithHeader), and
//     ReadPacketFunc lets a reader decode straight from the queued buffer,
//     which comes from a size-class pool (internal/bufpool) so big
//     datagrams (raft appends of big entries) are not allocated afresh.
//
//   - Bulk: a chunked, acknowledged transfer for payloads far larger than a
//     datagram (Raft snapshots: a MsgSnap header as meta plus the bbolt
//     database as body). It streams with bounded memory on a bulk-priority
//     channel: a window of chunks, each checked by CRC32C and placed by its
//     offset, cumulative end-to-end acknowledgements with receiver flow
//     control, a delay-based sending window (TCP Vegas: it keeps at most a
//     chunk or two queued on the path, so the bulk stream runs at the
//     path's speed without delaying the Raft messages that share its
//     links), go-back-N retransmission on loss or timeout, and an idle
//     timeout on both sides. Bulk.Send returns nil only after the receiver's
//     handler has consumed the complete, verified body and accepted it.
//
// Both services never block the router: inbound datagrams are handled
// without waiting, and sends fail fast with errors that wrap the mesh's
// (errors.Is(err, mesh.ErrNoRoute) and so on).
package meshconn
