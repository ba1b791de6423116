// Package kvstore owns one member's replicated state machine and the
// request paths around it: etcd's MVCC store over bbolt, the lessor, the
// auth store, alarms and the membership (all reused from
// go.etcd.io/etcd/server/v3), applied with etcd's own apply chain
// (apply.Apply + apply.NewUberApplier) to entries committed by raftnode.
//
// New(ctx, Config) locks the data directory (a second New on it fails
// fast), opens the backend and consistent index (installing a newer
// snapshot database if a crash left one waiting), creates or restarts the
// raft member (member and cluster ids derived from the initial cluster like
// etcd; on restart from the WAL metadata and backend), builds lessor, mvcc,
// auth, alarms and the applier in etcd's order, and starts raft. The
// returned *Server implements API (RaftKV, Lessor, Authenticator, Info) with
// etcd's semantics and errors, plus etcd's membership calls (AddMember,
// RemoveMember, UpdateMember, PromoteMember, MemberList). ReadyNotify closes
// once the member's attributes are committed (etcd's publish), which implies
// the first commit of its term was applied. Stop shuts everything down in
// order; requests after Stop fail with ErrStopped.
//
// Writes are proposed with a cluster-unique id and wait (wait.Wait) for
// their applied result; every failure path frees the waiter. Linearizable
// reads wait on a ReadIndex barrier (etcdserver/read) and then read mvcc
// locally; serializable reads skip the barrier. The leader runs the
// leader-only duties: lessor promotion after its term's no-op, expired
// lease revocation, lease checkpoints, and auto-compaction.
//
// Request validation (key sizes, txn limits, sort options) is grpcapi's job,
// as it is v3rpc's in etcd: the apply chain trusts proposals.
//
// # Other members
//
// kvstore talks to the other members only through Peers, an interface it
// defines and addresses by member id; embed builds it with the peer
// package over the mesh (Config.Peers), handing New a factory that New
// calls with the member as the transport sees it (PeerHost: etcd's
// rafthttp.Raft plus the membership). Without Config.Peers a member uses
// noPeers: raft goes to Config.Transport if any, nothing is forwarded and
// connectivity is unknown. The peer requests are what etcd sends over HTTP
// on the peer port (forward.go calls them, peer_handlers.go serves them):
// a follower forwards LeaseRenew and LeaseTimeToLive to the leader (each
// try given up after an election timeout or at a leader change, since a
// dead leader never answers over the mesh; retried until the request
// timeout, like etcd's waitLeader → forward → retry loop), PromoteMember is
// forwarded to the leader, a removed member that missed its removal is
// told so and stops (Err() == ErrRemoved). Errors a handler returns cross
// the wire as codes (peerErrors), never as text. A new member bootstraps
// in one of three modes (bootstrap.go):
//
//   - a WAL exists: restart from it; bootstrap flags are ignored.
//   - InitialClusterState "new": the static initial cluster.
//   - InitialClusterState "existing" (after `etcdctl member add`): ask any
//     reachable peer for the cluster id and members, find ourselves by
//     PeerURLs, start with an empty log as that member.
//   - Join: ask any reachable peer to add us (forwarded to the leader)
//     as a learner, start with an empty log, and promote ourselves once
//     the leader finds us caught up (Match ≥ 90 % of its own, started
//     voters keep a quorum).
//
// Raft never resends a proposal the network lost, and a follower's
// forwarded proposal is lost when the mesh link it was queued on dies
// silently, when a relaying member drops it while its own routes change
// (the proposer hears of it only once that change alters its own path to
// the leader, at whatever hop), or when the member it reached had
// no leader at that moment. So a pending request is proposed again when
// there is evidence its last copy was lost (proposeretry.go): a leader's
// own copy only after a leader or term change (it is in its own log); a
// forwarded one also one heartbeat after a mesh route change (next hop or
// any hop further along), when a
// request the member proposed later applied first, or after a timeout
// learnt from the member's commit latency; when several copies commit,
// every member applies the first and skips the
// later ones, deciding from a request-id record (bucket meshetcd_requests)
// written in the same bbolt commit as the entry's consistent index and
// pruned at fixed log indexes (dedupe.go), so restarted and snapshot-restored members decide alike.
// A request whose original was applied inside a leader snapshot this member
// restored has no response here: the first skipped copy answers its client
// with etcd's "request timed out" at once, not at the request timeout.
//
// Membership changes follow etcd: conf changes return once applied, strict
// reconfiguration checks (unless DisableStrictReconfigCheck) count started
// members from the membership and active ones from mesh reachability held
// for 5 s, a member that applies its own removal stops. Stop hands
// leadership to the most up-to-date reachable voter first; HardStop does
// not. embed/doc.go shows how a member is wired.
package kvstore
