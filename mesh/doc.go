// Package mesh is meshetcd's gossip mesh router: it keeps one authenticated,
// optionally encrypted TCP connection per neighbour, gossips the topology
// so every peer knows the whole graph, and routes unicast datagrams and
// broadcasts through relays, so members that cannot reach each other
// directly still can talk. Raft runs on top of it through meshconn.
//
// It owns: connections and their handshake, crypto and optional X.509
// TLS, framing, liveness,
// the topology CRDT, routes, gossip and datagram channels, the connection
// maker and accept throttling, and the status report. It does not own Raft
// membership: mesh reachability is only ever reported, never turned into
// conf changes.
//
// # Layout
//
// One file per job; the router's parts share the Router value but each
// keeps its own state and lock where it has any:
//
//	api.go, config.go   the surface other packages build on; Config and defaults
//	router.go           lifecycle: New, Start, Stop, and a connection's end
//	conntable.go        the connection table: in use, standby, replaced
//	                    incarnations, handshakes in progress, and the rules
//	                    between them (own lock; decides, never acts)
//	admission.go        accept throttle, handshake admission and install,
//	                    the rate-limited failure log
//	forwarding.go       data plane: unicast, relaying, broadcast, dedup,
//	                    reroute, gossip fan-out
//	maintenance.go      our record, route recalculation, anti-entropy, GC
//	connmaker.go        dialling seeds and discovered peers with backoff
//	conn.go, frame.go   one connection's reader, writer, queues; framing
//	liveness.go, quality.go  Lifeguard-style failure detection; link
//	                    quality (loss) with hysteresis
//	linkstats.go, status_links.go  per-peer cumulative link figures and
//	                    Status.Links
//	linkio.go           a connection's byte stream: sealing into and opening
//	                    out of the I/O buffers, batched records
//	handshake.go, crypto.go  preamble, hello, key agreement, AEAD
//	tls.go, tls_san.go  optional mutual X.509 TLS around each connection,
//	                    run before the mesh handshake (peer certificates)
//	topology.go, topology_gossip.go, routes.go  the topology CRDT, its
//	                    gossip, and routes computed from it
//	gossip.go           gossip and datagram channels and their delivery
//	status.go           the Status report and route subscriptions
//
// The pure rules have datadriven scenarios under testdata/: topology
// (merge, GC, digests), routes (BFS, broadcast trees) and conntable
// (tie-break, restart by UID, the winner dying, standby promotion, limits).
//
// # Wire protocol
//
// Each side of a new TCP connection first writes a fixed 53-byte clear
// preamble and reads the peer's:
//
//	"MESHETCD" | min version u16 | max version u16
//	| mode u8 (0 plaintext, 1 encrypted with the mesh secret, 2 ephemeral keys only)
//	| cluster label fingerprint [8] (SHA-256 prefix) | ephemeral X25519 public key [32]
//
// Wrong magic closes the connection (HTTP probes, TLS hellos, scanners);
// no common version gives ErrVersion, a mode mismatch (plaintext, ephemeral,
// mesh secret: any two different) ErrEncryptionMismatch naming both modes,
// and a different label fingerprint ErrWrongCluster, before any key work.
// Then every message is a frame: a big-endian u32 length, validated against
// the current cap before anything is allocated (4 KiB until the hello is
// verified, then MaxDatagramSize plus envelope header), followed by the
// body, sealed with the AEAD when encrypted. Both ends use the highest
// version both speak (this code: 2..3). From version 3, an encrypted link
// may also carry batched records: a length with the top bit set (at most
// 16 KiB plus tag), then AEAD(u16 length ‖ envelope ‖ ...), packing
// consecutive envelopes of at most 1 KiB under one seal. The body is an
// envelope:
//
//	type u8 | flags u8 (send class) | ttl u8 | channel u16 | seq u64
//	| src len u8, src | dst len u8, dst | payload
//
// The first frame each way is the Hello (type 1): transcript hash of both
// preambles (key confirmation), cluster label, peer name, UID, nickname,
// advertised addresses, feature bits. A hello that does not open means a
// different secret (ErrAuth); a mismatched transcript also gives ErrAuth;
// our own name with another UID gives ErrNameCollision, with our UID a
// self-connection (the address is never dialled again). The whole
// handshake has HandshakeTimeout. Afterwards the types are ping/pong
// (heartbeat and RTT), gossip (neighbour only), unicast (routed by dst,
// TTL decremented per hop, default 16), broadcast (forwarded along the
// source's BFS spanning tree, deduplicated by (src, seq); seq starts at the
// boot time in ns so restarts never collide) and goodbye (graceful close,
// so the peer reroutes at once).
//
// # Crypto
//
// With Password, the pre-shared key is Argon2id(password, salt =
// SHA-256("meshetcd-mesh-psk-v1" ‖ label), time 1, 64 MiB, 2 threads),
// computed once in New; with PSK, the 32 bytes are used as is. Each
// connection makes a fresh X25519 key (forward secrecy); ikm = X25519 ‖
// PSK, salt = SHA-256(label ‖ lower pub ‖ higher pub), and HKDF-SHA256
// yields one AES-256-GCM key per direction. Nonces are per-direction
// counters that are never sent: a replayed, dropped, reordered or
// reflected frame fails to authenticate and the connection is closed.
// Plaintext needs InsecurePlaintext explicitly; both ends must agree.
//
// EphemeralEncryption (meshetcd's --peer-auto-tls) is the same exchange,
// derivation, AEAD, counter nonces and key confirmation with an empty PSK:
// every link is encrypted with fresh per-connection keys, which makes it
// confidential against passive eavesdroppers, but NOT authenticated —
// whoever reaches the port completes the handshake, and an active man in
// the middle can read and alter traffic. That mirrors etcd's self-signed
// auto TLS, which skips peer certificate verification. Status reports
// each connection's mode ("psk", "ephemeral", "tls", "tls+psk", "plaintext").
//
// # X.509 TLS and the threat model
//
// With Config.TLS (meshetcd's --peer-cert-file and friends over https://
// peer URLs; build it with NewTLSConfig from etcd's transport.TLSInfo),
// every TCP connection first runs a TLS handshake — the dialler is the
// TLS client, the acceptor the TLS server — and the preamble, hello and
// frames above then run inside TLS. TLS 1.3 only unless a version range
// is configured; ALPN "meshetcd-mesh/2". The checks are etcd's own: the
// peer's chain must lead to --peer-trusted-ca-file (a trusted CA file, or
// --peer-client-cert-auth, makes the acceptor require a client
// certificate, so links are mutual), must be valid now, not revoked in
// --peer-crl-file (checked on both ends), and its CN must be in
// --peer-cert-allowed-cn or its SANs match --peer-cert-allowed-hostname
// (also both ends). The dialler verifies the acceptor's certificate
// against the host it dialled (IP or DNS SAN), like etcd's peer client;
// the acceptor checks that the dialler's certificate names the address it
// connects from (IP SAN, or a DNS SAN resolving to it), like etcd's peer
// listener, unless --peer-skip-client-san-verification.
// Certificates are re-read from disk on every handshake, so a rotated
// certificate takes effect on the next connection without a restart.
//
// A refused certificate is ErrPeerCertificate, with a precise reason
// (unknown CA, expired, revoked, CN/hostname not allowed, no certificate,
// does not match the dialled or the source address, remote refused our
// certificate):
// logged and backed off like a wrong secret (below), and listed in
// Status().HandshakeFailures. With TLS 1.3 a dialler learns that the
// acceptor refused its certificate only on its first read, so it reports
// "remote refused our certificate" from the preamble exchange. A peer
// without TLS facing one with TLS fails with ErrEncryptionMismatch on the
// TLS side (the other side only sees the connection closed).
//
// Who can connect, per mode:
//
//   - Plaintext: anyone who reaches the port. No protection.
//   - EphemeralEncryption (--peer-auto-tls without certificates): anyone
//     who reaches the port; links are confidential against passive
//     eavesdroppers only. An active man in the middle wins. As etcd's
//     self-signed auto TLS, which skips verification.
//   - Password/PSK: only holders of the mesh secret; links are
//     confidential and authenticated, with forward secrecy. A stolen
//     secret admits its holder until every member changes it.
//   - TLS: only holders of a private key whose certificate the CA signed
//     and that passes the CRL and CN/hostname checks; links are
//     confidential and authenticated with forward secrecy (TLS 1.3).
//     Without a trusted CA file and without --peer-client-cert-auth the
//     acceptor does not ask for a client certificate (etcd's rule), so
//     inbound peers are then unauthenticated: always give the CA. A
//     revoked certificate is refused once the CRL file lists it (read on
//     every handshake), but links established before stay up until they
//     reconnect.
//   - TLS and Password/PSK, both given: a peer needs an accepted
//     certificate AND the secret; the mesh framing is then encrypted with
//     the secret inside TLS as well (double encryption, the price of
//     checking the secret). With TLS alone the framing runs in plaintext
//     inside TLS, so X.509 links cost what mesh-secret links cost.
//
// Not covered in any mode: a member that is admitted is trusted with all
// mesh traffic it relays (frames are protected per link, not end to end,
// so a relay reads what it forwards). Any certificate the CA signed for
// the right address is a member unless --peer-cert-allowed-cn or
// --peer-cert-allowed-hostname narrows it, as in etcd. Accept throttling
// runs before the TLS handshake, so unauthenticated dialers cost at most
// the throttle's rate of handshakes.
//
// # Connections and liveness
//
// There is one connection per neighbour pair; when both sides dial at
// once, both keep the one dialled by the lower peer name. The loser stays
// open but unused (a standby) until its dialler has seen a frame from the
// remote on the winner, so neither side is ever without a link; a standby
// is promoted if the winner dies. A new connection
// from a known name with a new UID replaces the old one (a restart); an
// incarnation that was replaced coming back means two live peers share a
// name: ErrNameCollision, logged as an error and shown in Status.
//
// Every send is asynchronous: frames go into bounded per-connection
// queues by class (control > interactive > bulk; bulk token-bucket limited to
// BulkRate) and Send returns ErrQueueFull instead of blocking. One writer
// goroutine per connection flushes batches under WriteTimeout (5 s); one
// reader goroutine decodes and hands frames to per-channel bounded queues
// or to the next hop's queue, never calling application code. Relayed
// frames are opened and re-sealed in place in pooled buffers (no
// allocation per forwarded frame). Frames queued on a connection that dies
// are re-routed once if another route exists.
//
// Defaults: a ping every HeartbeatInterval (150 ms); the writer checks
// each interval and declares the connection dead after DeadTimeout
// (600 ms) with nothing received, or with no pong to our pings (a peer that
// stopped reading, or a one-way link), so a cut or silently blackholed
// link is routed around within about 750 ms, inside Raft's 1 s election
// timeout. The detector is Lifeguard-style (liveness.go) so a busy CPU
// cannot fool it: heartbeat ticks that the runtime delivers late raise a
// local health score that lengthens every dead timeout (up to 1.5 ×); a
// link silent for a heartbeat less than the timeout is only suspect, and
// is declared dead on a later check past the timeout only with a witness
// that our own receive path works (another connection received a frame
// within two heartbeats, or the link itself delivers but never answers,
// which waits for the backstop below).
// While a link is suspect, routes avoid it like a degraded link (below),
// so traffic moves a heartbeat before the dead timeout without tearing
// the connection down. Time our own process spent starved (a tick more
// than half a heartbeat late) does not count towards a death: confirming
// one needs the timeout's worth of silence after we woke. Silence of twice
// the (health-scaled) dead timeout is dead regardless (counted the same
// way); the reader's deadline of 3 × DeadTimeout is the last backstop. Raise both for WANs,
// keeping DeadTimeout ≥ 3 × heartbeat.
//
// Link quality (quality.go): the share of pings not answered within one
// heartbeat, as a moving average, marks a link degraded at 25 % and
// healthy again at 5 % after at least 3 s (hysteresis). A connection that
// fails (declared dead, reset, closed without a goodbye) within 30 s of the
// link's previous failure leaves the link degraded, the hold starting at
// the failure; the next connection to the same incarnation inherits the
// estimate and the pings judged so far. So a lossy or flapping link whose
// connections die young is not routed straight back onto each time it
// reconnects, while one failure alone (a healed cut, a false death) costs
// nothing. Status.Links and
// the metrics report each peer's link state (up, suspect, degraded, down),
// RTT, loss, the path our traffic takes, and byte, frame and failure totals
// that survive link re-establishment (linkstats.go).
//
// # Topology
//
// Each peer owns one record {name, UID, version, nickname, advertised
// addresses, connections}; only the owner changes it, bumping the version,
// which starts at the boot time in Unix ms so a restart supersedes the old
// incarnation. Records merge as last-writer-wins registers (higher version,
// then higher UID): commutative, associative, idempotent. Changes to our
// record are gossiped to neighbours at once; receivers relay what was new
// to them. Every GossipInterval (5 s) a digest {name → UID, version} goes
// to one random neighbour, which pushes back the records we lack and, if
// we know newer ones, answers with its own digest (O(peers) per round, not
// O(peers × degree)); a new neighbour gets the complete state at once.
// A peer unreachable for GCGrace (60 s) is collected into a tombstone kept
// for TombstoneTTL (10 min) that refuses stale copies of its record. A
// record with our name and another UID that keeps advancing after we
// out-versioned it once is a name collision: flagged, never fought over.
// Bounds: MaxPeers records (1024), at most MaxPeers connections per record,
// 64-byte names and nicknames, 8 addresses.
//
// # Routing
//
// Routes are a BFS from us over symmetric established edges: our own links
// count as soon as our handshake completes, others only when both ends'
// records claim them. Levels and neighbours are visited in name order, so
// equal views give equal routes everywhere. Tables are immutable and
// published through an atomic pointer (lookups take no lock); topology
// changes recompute after RouteDebounce (10 ms), local connection changes
// at once. Our own degraded links cost like three hops: a destination
// whose shortest path starts on one takes the shortest path avoiding our
// degraded links if it is at most one hop longer, so a healthy two-hop
// path beats a lossy direct link, and a three-hop detour does not (the
// testdata/routes/quality.txt and testdata/quality scenarios). Only the
// originator steers by quality: relays forward on the plain shortest path
// of the shared view, so two members avoiding their own bad links to a
// third never bounce frames between them. SubscribeRoutes reports changes
// (reachability, next hop, a hop further along, UID), coalesced per peer
// for slow subscribers so the router never blocks.
//
// # Connection maker
//
// Seeds are retried forever with full-jitter exponential backoff (500 ms
// to 30 s). A peer that has just lost its last connection retries its
// seeds at once, and while alone caps seed backoff at 4 × BackoffMin (2 s)
// so it finds its way back quickly without dialling in a loop. An address
// that refused us (ErrAuth, ErrWrongCluster, ErrEncryptionMismatch,
// ErrVersion, ErrPeerCertificate; ErrNameCollision waits NameCollisionBackoff) is not dialled
// again for AuthFailureBackoff (≥ 30 s), whatever happens meanwhile —
// being alone, later transport errors, rediscovery. Refusals are logged at
// error level with their reason ("mesh secret mismatch", "cluster label
// mismatch", ...) once per remote (dialled address, or host for inbound)
// and reason per AuthFailureBackoff; repeats go to debug and are counted
// in the next line. Other peers are found
// through the addresses advertised in their records; up to
// FullMeshThreshold (16) known peers we connect to all, above it to Degree
// (8). ConnLimit (64) counts handshakes in progress; MaxPendingHandshakes
// (16) caps them. Inbound connections pass a global (20/s, burst 32) and
// per-IP (5/s, burst 16) token bucket before a byte is read.
//
// Tests use mesh/memnet, an in-memory network with fault injection, via
// Config.Transport.
package mesh
