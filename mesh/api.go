package mesh

import (
	"errors"
)

// This file pins the surface that meshconn (and later raftnode) build on.
// Signatures here change only together with their callers.

// PeerName identifies a peer uniquely within one mesh. It is chosen by the
// user of the router (meshetcd uses host:port of the member's first sorted
// advertised peer URL, see peer.NameFromURLs); 1..64 bytes,
// printable ASCII without spaces or '/'.
type PeerName string

// ChannelID identifies a gossip or datagram channel on the wire; both ends
// register the same id for the same purpose. Ids below 16 are reserved for
// the router itself (topology, heartbeats).
type ChannelID uint16

// Priority is a per-connection send class. Control traffic (heartbeats,
// handshake, topology) always goes first; interactive, latency-sensitive
// traffic (meshetcd's Raft messages) next; bulk transfers and periodic gossip
// last, rate-limited so they cannot delay the others.
type Priority uint8

const (
	PriorityInteractive Priority = iota + 1
	PriorityBulk
)

// Errors returned by sends and handshakes. Send-side errors never block.
var (
	ErrNoRoute       = errors.New("mesh: no route to peer")
	ErrQueueFull     = errors.New("mesh: send queue full")
	ErrTooLarge      = errors.New("mesh: datagram too large")
	ErrClosed        = errors.New("mesh: router closed")
	ErrAuth          = errors.New("mesh: peer authentication failed (mesh secret mismatch)")
	ErrWrongCluster  = errors.New("mesh: peer belongs to a different cluster (cluster label mismatch)")
	ErrNameCollision = errors.New("mesh: another live peer uses this name")
	ErrVersion       = errors.New("mesh: no common protocol version")
	// ErrEncryptionMismatch: the peers use different modes among
	// plaintext, ephemeral encryption (auto TLS) and a mesh secret.
	ErrEncryptionMismatch = errors.New("mesh: encryption mode mismatch (peers differ in plaintext / auto TLS / mesh secret)")
)

// DatagramHandler receives one datagram. It runs on the channel's own
// delivery goroutine, never on a socket reader, and must not retain payload
// after returning unless it copies it.
type DatagramHandler func(src PeerName, payload []byte)

// RouteEvent says that the reachability of Peer changed, or the path to it
// did (its next hop, or a hop further along).
type RouteEvent struct {
	Peer      PeerName
	Reachable bool
	NextHop   PeerName // empty when unreachable; == Peer for a direct link
	// UID is Peer's incarnation (random per start; 0 if unknown). An event
	// with the same reachability but a new UID means Peer restarted.
	UID uint64
}

// The Router methods meshconn and raftnode rely on:
//
//	func New(cfg Config) (*Router, error)
//	func (r *Router) Start(ctx context.Context) error   // listen (within ctx) + connect to seeds
//	func (r *Router) Stop() error                       // closes everything, waits for goroutines
//	func (r *Router) Name() PeerName
//	func (r *Router) AddSeeds(addrs ...string)
//	func (r *Router) NewDatagramChannel(id ChannelID, name string, prio Priority, h DatagramHandler) (*DatagramChannel, error)
//	func (c *DatagramChannel) Send(dst PeerName, payload []byte) error // never blocks; ErrNoRoute/ErrQueueFull/ErrTooLarge/ErrClosed
//	func (c *DatagramChannel) SendWithHeader(dst PeerName, header, body []byte) error // Send of header‖body, one copy
//	func (c *DatagramChannel) MaxPayload() int
//	func (r *Router) SubscribeRoutes(buffer int) (events <-chan RouteEvent, cancel func())
//	func (r *Router) Reachable(p PeerName) bool
//	func (r *Router) Status() Status                    // JSON-marshallable
//	func (r *Router) StatusHandler() http.Handler       // serves Status as JSON
//
// Beyond that list (see doc.go): DefaultConfig, Router.UID, Router.ListenAddr,
// Router.NewGossip (weave-style state channels), DatagramChannel.Dropped,
// and mesh/memnet for tests.
