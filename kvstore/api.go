package kvstore

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/raftnode"
)

// This file is the contract between kvstore and its callers (grpcapi, embed).
// The method sets mirror etcd's etcdserver interfaces of the same names
// (server/etcdserver/v3_server.go in go.etcd.io/etcd/server/v3 v3.7.3), so a
// gRPC layer written against etcd's semantics needs no translation. Errors
// returned are etcd's own internal error values (etcdserver/errors, mvcc,
// lease, auth, membership); grpcapi maps them to rpctypes.

// Config configures one member's state machine and consensus. Zero values
// take the documented defaults, which match etcd's.
type Config struct {
	Logger *zap.Logger // required in practice; nil means zap.NewNop()

	Name    string // member name (etcd --name), default "default"
	DataDir string // etcd layout: <DataDir>/member/{wal,snap}

	// Bootstrap, as etcd's flags. Ignored when DataDir already holds a WAL.
	InitialCluster      types.URLsMap // name -> peer URLs; default {Name: PeerURLs}
	InitialClusterToken string        // default "etcd-cluster"
	InitialClusterState string        // "new" (default) or "existing"
	PeerURLs            types.URLs    // this member's advertised peer URLs
	ClientURLs          types.URLs    // this member's advertised client URLs

	SnapshotCount uint64 // default 10000
	// SnapshotCatchUpEntries raft entries stay in memory after a snapshot
	// for slow followers (etcd --experimental-snapshot-catchup-entries).
	SnapshotCatchUpEntries uint64        // default 5000
	HeartbeatInterval      time.Duration // default 100ms (one raft tick)
	ElectionTimeout        time.Duration // default 1000ms
	MaxRequestBytes        uint          // default 1.5 MiB
	MaxTxnOps              uint          // default 128
	// MaxSizePerMsg bounds one raft message's entry batch; it must exceed
	// MaxRequestBytes (and, with the mesh, stay below its datagram limit).
	MaxSizePerMsg     uint64 // default MaxRequestBytes + 512 KiB
	QuotaBackendBytes int64  // 0 = etcd default (2 GiB), <0 disables
	UnsafeNoFsync     bool

	MaxLearners int // etcd --max-learners; default 1

	// LeaseCheckpointInterval is how often the leader persists leases'
	// remaining TTLs (etcd --experimental-lease-checkpoint-interval);
	// default 5m.
	LeaseCheckpointInterval time.Duration

	AuthToken  string        // etcd --auth-token; default "simple"
	TokenTTL   time.Duration // simple-token lifetime; default 300s
	BcryptCost int           // default bcrypt.DefaultCost; out of range: etcd's warning + default
	// ClientCertAuthEnabled is etcd's --client-cert-auth: a request that
	// carries no token but came over TLS with a verified client
	// certificate is made as the user named by the certificate's CN.
	ClientCertAuthEnabled bool
	// AutoCompactionMode is "periodic" or "revision"; AutoCompactionRetention
	// is a duration (periodic) or a revision count (revision). Empty/0 = off.
	AutoCompactionMode      string
	AutoCompactionRetention string

	// MetricsRegisterer receives this member's etcd_server_* metrics (has
	// leader, proposals, leader changes, ...); nil registers none. One
	// member per registry; Stop unregisters them.
	MetricsRegisterer prometheus.Registerer

	// Transport carries raft messages to other members when there is no
	// Peers (tests: a raft-message-only network); nil is valid for a
	// one-member cluster (it sends nothing). Leave it nil when Peers is set.
	Transport raftnode.Transport

	// Peers connects this member to the others (embed: peer.New on the
	// member's mesh router). New calls it once with the member as the
	// transport sees it, uses the result for raft, forwarding (lease
	// keepalive and time-to-live, learner promotion) and the join/existing
	// bootstrap, and closes it in Stop. nil: a member without a network
	// (a follower answers lease requests with ErrNotPrimary, and strict
	// reconfiguration checks that need connectivity are skipped).
	Peers func(host PeerHost) (Peers, error)
	// Join (needs Peers; ignored when DataDir holds a WAL): ask any reachable
	// member to add this member (Name, PeerURLs) as a learner, start with
	// an empty log, catch up, and promote itself to a voter once the leader
	// deems it ready. InitialCluster is ignored. New's ctx bounds the wait
	// for the cluster's answer.
	Join bool
	// With InitialClusterState "existing" and no WAL (etcd's flow after
	// `etcdctl member add`), New asks any reachable member for the cluster
	// id and members (needs Peers), finds itself by PeerURLs, and starts
	// with an empty log as that member.

	// DisableStrictReconfigCheck is etcd's --strict-reconfig-check=false:
	// membership changes are no longer refused when they would leave too
	// few started or connected members for a quorum.
	DisableStrictReconfigCheck bool

	// healthInterval is etcd's HealthInterval (5 s): how long peers must
	// have been connected to count as active for the strict reconfig
	// check. Tests shorten it.
	healthInterval time.Duration
}

// RaftKV is etcd's etcdserver.RaftKV (without RangeStream, which grpcapi may
// answer with Unimplemented like etcd's mock server does).
type RaftKV interface {
	Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error)
	Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error)
	DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error)
	Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error)
	Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error)
}

// Lessor is etcd's etcdserver.Lessor.
type Lessor interface {
	LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error)
	LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error)
	LeaseRenew(ctx context.Context, id lease.LeaseID) (int64, error)
	LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error)
	LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error)
}

// Authenticator is etcd's etcdserver.Authenticator.
type Authenticator interface {
	AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error)
	AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error)
	AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error)
	Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error)
	UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error)
	UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error)
	UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error)
	UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error)
	UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error)
	UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error)
	RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error)
	RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error)
	RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error)
	RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error)
	RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error)
	UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error)
	RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error)
}

// Member is what the Cluster and Maintenance services need to know about a
// member of the committed membership.
type Member = membership.Member

// Info answers the questions every response header and the Maintenance and
// Cluster services ask.
type Info interface {
	MemberID() types.ID
	ClusterID() types.ID
	Leader() types.ID // 0 (types.ID(raft.None)) when there is none
	Term() uint64
	CommittedIndex() uint64
	AppliedIndex() uint64
	IsLearner() bool
	Members() []*Member // committed membership, sorted by id

	KV() mvcc.WatchableKV // for Watch streams, HashKV and header revisions
	Backend() backend.Backend
	AuthStore() auth.AuthStore
	AuthInfoFromCtx(ctx context.Context) (*auth.AuthInfo, error)

	Alarms() []*pb.AlarmMember
	Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error)
	Defragment() error
	MoveLeader(ctx context.Context, lead, target uint64) error

	Config() Config // effective config after defaults
	// ReadyNotify is closed once the member can serve linearizable reads.
	ReadyNotify() <-chan struct{}
	// StopNotify is closed once the member has stopped (Stop, or a fatal error).
	StopNotify() <-chan struct{}
	// LinearizableReadNotify blocks until this member has applied everything
	// committed before the call (a ReadIndex barrier).
	LinearizableReadNotify(ctx context.Context) error
}

// API is everything grpcapi and embed use. *Server implements it.
type API interface {
	RaftKV
	Lessor
	Authenticator
	Info
}
