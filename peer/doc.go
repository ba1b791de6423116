// Package peer is a member's one door to the other members: the only
// package that knows both raft and the mesh. embed builds a Transport on
// the member's mesh router; kvstore and raftnode use it only through the
// interfaces they define (kvstore.Peers, raftnode.Transport) and hand it
// what it delivers to (Host, built like etcd's rafthttp.Transport from
// rafthttp.Raft: Process, IsIDRemoved, ReportUnreachable, ReportSnapshot).
//
// # What it owns
//
//   - Raft messages (RaftTransport): each raft message is one datagram
//     (proto.Marshal) on a meshconn.PacketConn (RaftChannel). Send only
//     queues (up to 4096 per member, like rafthttp's stream buffer); one
//     goroutine per member marshals and sends in order, so the leader's
//     Ready loop goes on to its WAL write while big appends are encoded
//     and copied onto the mesh, and received datagrams are decoded
//     straight out of the PacketConn's buffer. MsgSnap goes
//     with the database as one meshconn.Bulk transfer (BulkChannel: the
//     marshalled message as meta, the database streamed as body, never held
//     in memory), reported to raft as finished only once the receiver saved
//     the database durably and processed the message. Any send error
//     (unknown member, send queue full, no route, mesh queue full, too
//     large) and any route event
//     saying a member's mesh peer became unreachable is ReportUnreachable;
//     reachability never changes membership. Undecodable datagrams are
//     counted and dropped (Stats). Forwarded proposals (MsgProp) are
//     stepped on their own goroutine, at most 4096 waiting (etcd's
//     rafthttp does the same): raft blocks a proposal while the member
//     knows no leader, and on the read loop that would stop the very
//     messages that tell it the leader. Datagrams dropped on arrival (inbound
//     queue full, undecodable, misaddressed) are logged at most every 5 s,
//     so a member whose raft hears nothing over live links says so.
//   - Peer requests (Endpoint, RequestChannel): what etcd does with HTTP
//     requests on the peer port outside raft (lease keepalive and
//     time-to-live forwarded to the leader, learner promotion, the member
//     list for a member started with --initial-cluster-state existing, our
//     own join, and "you were removed").
//   - Member id -> mesh peer: a member's mesh peer name is NameFromURLs(its
//     peer URLs), host:port of the first sorted URL, known in every
//     bootstrap mode before the member id; the Host's membership maps ids
//     to peer URLs.
//   - Reachability and route events (ActiveSince, RouteChangedNotify),
//     peer enumeration for bootstrap (ReachablePeers).
//   - The channel ids (RaftChannel, BulkChannel, RequestChannel,
//     DiscoveryChannel) and datagram sizing: MaxRequestBytes <
//     MaxSizePerMsg, raftnode.RequiredMessageSize(MaxSizePerMsg) <= the
//     PacketConn's datagram size; set the router's mesh.Config.
//     MaxDatagramSize to MaxDatagramSize(MaxSizePerMsg). raftnode refuses
//     a MaxSizePerMsg the transport cannot carry.
//
// # Peer requests on the wire
//
// A request is one datagram: kind, method, a 64-bit id unique per Endpoint,
// the caller's remaining timeout in milliseconds, and the payload. The
// answer is one datagram with the same id, carrying either the result or an
// error. There are no retries here: a lost datagram is a timeout, and
// callers that can retry (they all can: every method is idempotent or
// checked on apply) do so themselves.
//
// Bounds: at most EndpointConfig.MaxConcurrent handlers run at once (more
// requests get ErrBusy at once), handlers run with the caller's timeout
// capped at EndpointConfig.MaxHandlerTime, payloads are limited by the mesh
// datagram size, and calls without a deadline get
// EndpointConfig.DefaultTimeout.
//
// Errors: ErrTimeout (no answer in time), ErrBusy, ErrNoHandler (the other
// side does not serve the method), ErrClosed, a mesh send error (wrapped,
// e.g. mesh.ErrNoRoute), or *RemoteError. Errors cross the wire as codes,
// never matched by text: a handler error that is (or wraps) a CodedError
// travels with its code, and RemoteError.Is matches a CodedError with the
// same code; the text is only for logs.
package peer
