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
// A transport for other members is plugged in through Config.Transport and
// bound to the member's raft node (Server.Raft) once New returns.
package kvstore
