package kvstore

import (
	"context"
	"errors"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/etcd/pkg/v3/notify"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/etcd/server/v3/auth"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3alarm"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3compactor"
	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	"go.etcd.io/etcd/server/v3/etcdserver/cindex"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/etcdserver/read"
	"go.etcd.io/etcd/server/v3/lease"
	serverstorage "go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/meshetcd/meshetcd/raftnode"
)

// backendOpenTimeout bounds waiting for bbolt's own file lock. Our data-dir
// lock is taken first, so waiting here means someone bypassed it.
const backendOpenTimeout = time.Second

// Server is one running member: consensus (raftnode) plus etcd's state
// machine (mvcc, lessor, auth, alarms) and the request paths around them.
type Server struct {
	lg       *zap.Logger
	cfg      Config
	memberID types.ID
	dirLock  *fileutil.LockedFile

	// bemu guards be, which a leader snapshot replaces (applySnapshot).
	bemu    sync.RWMutex
	be      backend.Backend
	beHooks *serverstorage.BackendHooks
	ci      cindex.ConsistentIndexer

	cluster    *membership.RaftCluster
	lessor     lease.Lessor
	kv         mvcc.WatchableKV
	authStore  auth.AuthStore
	alarmStore *v3alarm.AlarmStore
	compactor  v3compactor.Compactor // nil when auto-compaction is off
	// uberApply is used only by the apply goroutine.
	uberApply apply.UberApplier

	r    *raftnode.Node
	read *read.Read
	// peers connect this member to the others (noPeers without Config.Peers).
	peers Peers
	// running is set once s.r, s.cluster and s.memberID exist: from then
	// on the peers may deliver to raft (peerHost).
	running atomic.Bool
	// membershipVersion counts membership changes applied (conf changes,
	// snapshot restores) so the peer transport can reuse resolved peers.
	membershipVersion atomic.Uint64
	// learnerCache is IsLearner's answer at a membership version.
	learnerCache atomic.Pointer[learnerState]
	// bootPeers are the members a joining member learned before applying
	// any membership; immutable after New.
	bootPeers map[types.ID][]string
	// dd deduplicates retried requests at apply (apply goroutine only).
	dd dedupe
	// stopErr says why the member stopped by itself (removed, raft failed).
	stopErr  atomic.Pointer[error]
	w        wait.Wait
	reqIDGen *idutil.Generator
	// retry decides when a pending request is proposed again.
	retry *proposalRetry

	metrics           *serverMetrics
	firstCommitInTerm *notify.Notifier
	// clusterVersionChanged wakes monitorStorageVersion; storageVersionCurrent
	// is set once the backend's storage version matches the cluster version.
	clusterVersionChanged *notify.Notifier
	storageVersionCurrent atomic.Bool
	appliedIndex          atomic.Uint64
	appliedTerm           atomic.Uint64
	leadElectedTime       atomic.Int64 // unix nanos

	readych   chan struct{}
	readyOnce sync.Once

	// ctx is cancelled when Stop begins; background proposals use it.
	ctx      context.Context
	cancel   context.CancelFunc
	stopping chan struct{} // closed when Stop begins
	done     chan struct{} // closed when Stop has finished
	stopOnce sync.Once

	// storesMu keeps Stop from closing the stores under a request that
	// reads them locally; storesClosed is set once they are closed.
	storesMu     sync.RWMutex
	storesClosed bool

	// wg tracks background goroutines; wgMu makes Add and Stop's close of
	// stopping mutually exclusive so nothing starts after Stop waits.
	wgMu sync.RWMutex
	wg   sync.WaitGroup
}

var _ API = (*Server)(nil)

// New starts a member: it locks DataDir, opens (or creates) the backend and
// WAL, recovers, and runs raft. The returned Server is running; call Stop.
// A data directory held by another Server or process fails immediately.
func New(ctx context.Context, cfg Config) (srv *Server, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kvstore: start member: %w", err)
	}
	lg := cfg.Logger
	// closers undo whatever was opened if a later step fails.
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	if err := fileutil.TouchDirAll(lg, cfg.DataDir); err != nil {
		return nil, fmt.Errorf("kvstore: data directory %s: %w", cfg.DataDir, err)
	}
	dirLock, err := fileutil.TryLockFile(cfg.lockPath(), os.O_WRONLY|os.O_CREATE, fileutil.PrivateFileMode)
	if err != nil {
		if errors.Is(err, fileutil.ErrLocked) {
			return nil, fmt.Errorf("kvstore: data directory %s is in use by another member (lock %s): %w", cfg.DataDir, cfg.lockPath(), err)
		}
		return nil, fmt.Errorf("kvstore: lock data directory %s: %w", cfg.DataDir, err)
	}
	closers = append(closers, func() { dirLock.Close() })
	if err := fileutil.TouchDirAll(lg, cfg.memberDir()); err != nil {
		return nil, fmt.Errorf("kvstore: member directory: %w", err)
	}
	if err := fileutil.TouchDirAll(lg, cfg.snapDir()); err != nil {
		return nil, fmt.Errorf("kvstore: snapshot directory: %w", err)
	}
	haveWAL := raftnode.WALExists(cfg.walDir())
	joining := !haveWAL && (cfg.Join || cfg.InitialClusterState == clusterStateExisting)
	if joining && cfg.Peers == nil {
		return nil, errors.New("kvstore: joining an existing cluster (InitialClusterState \"existing\") needs Peers to reach its members")
	}

	s := &Server{
		lg:                    lg,
		cfg:                   cfg,
		dirLock:               dirLock,
		w:                     wait.New(),
		firstCommitInTerm:     notify.NewNotifier(),
		clusterVersionChanged: notify.NewNotifier(),
		readych:               make(chan struct{}),
		stopping:              make(chan struct{}),
		done:                  make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	closers = append(closers, s.cancel)
	s.peers = noPeers{}
	if cfg.Peers != nil {
		if s.peers, err = cfg.Peers(peerHost{s}); err != nil {
			return nil, fmt.Errorf("kvstore: connect to the other members: %w", err)
		}
		closers = append(closers, s.closePeers)
		cfg.Transport = s.peers
	}

	// Backend and consistent index first: a restart needs the ConfState
	// and applied index they hold, as in etcd's bootstrap (server/etcdserver/bootstrap.go).
	s.ci = cindex.NewConsistentIndex(nil)
	s.beHooks = serverstorage.NewBackendHooks(lg, s.ci)
	hooks := s.backendHooks()
	be, err := openBackend(cfg, hooks)
	if err != nil {
		return nil, err
	}
	s.be = be
	closers = append(closers, func() {
		if be != nil {
			be.Close()
		}
	})
	s.ci.SetBackend(be)
	schema.CreateMetaBucket(be.BatchTx())
	if haveWAL {
		if be, err = recoverSnapshotBackend(cfg, be, s.ci, hooks); err != nil {
			return nil, err
		}
		s.be = be
	}

	s.dd = loadDedupe(be, hooks.journal, s.ci.ConsistentIndex())

	raftCfg := raftnode.Config{
		Logger:                 lg,
		WALDir:                 cfg.walDir(),
		SnapDir:                cfg.snapDir(),
		TickInterval:           cfg.HeartbeatInterval,
		ElectionTicks:          cfg.electionTicks(),
		SnapshotCount:          cfg.SnapshotCount,
		SnapshotCatchUpEntries: cfg.SnapshotCatchUpEntries,
		MaxSizePerMsg:          cfg.MaxSizePerMsg,
		UnsafeNoFsync:          cfg.UnsafeNoFsync,
		Transport:              cfg.Transport,
		// Answers false until the member runs (peerHost gates on s.running).
		IsIDRemoved: peerHost{s}.IsIDRemoved,
		// Heartbeats flow once the node runs, after the metrics exist.
		HeartbeatSendLate: func() { s.metrics.heartbeatFailures.Inc() },
	}
	clusterID, err := s.bootstrap(ctx, raftCfg, haveWAL, joining)
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.r.Stop)
	s.reqIDGen = idutil.NewGenerator(uint16(s.memberID), time.Now())
	s.retry = newProposalRetry(cfg.HeartbeatInterval, cfg.ElectionTimeout)
	s.metrics = newServerMetrics(s)
	if cfg.MetricsRegisterer != nil {
		if err := s.metrics.register(cfg.MetricsRegisterer); err != nil {
			return nil, err
		}
		closers = append(closers, func() { s.metrics.unregister(cfg.MetricsRegisterer) })
	}

	// The lessor comes before mvcc: restoring mvcc re-attaches keys to leases.
	s.lessor = lease.NewLessor(lg, be, s.cluster, lease.LessorConfig{
		MinLeaseTTL:                cfg.minLeaseTTL(),
		CheckpointInterval:         cfg.LeaseCheckpointInterval,
		ExpiredLeasesRetryInterval: cfg.requestTimeout(),
		CheckpointPersist:          true,
	})
	closers = append(closers, s.lessor.Stop)
	tp, err := auth.NewTokenProvider(lg, cfg.AuthToken, s.r.ApplyWait, cfg.TokenTTL)
	if err != nil {
		return nil, fmt.Errorf("kvstore: auth token provider %q: %w", cfg.AuthToken, err)
	}
	s.kv = mvcc.New(lg, be, s.lessor, mvcc.StoreConfig{})
	closers = append(closers, func() { s.kv.Close() })
	s.authStore = auth.NewAuthStore(lg, schema.NewAuthBackend(lg, be), tp, cfg.BcryptCost)
	closers = append(closers, func() { s.authStore.Close() })
	if s.alarmStore, err = v3alarm.NewAlarmStore(lg, schema.NewAlarmBackend(lg, be)); err != nil {
		return nil, fmt.Errorf("kvstore: restore alarms: %w", err)
	}
	if retention, _ := cfg.autoCompactionRetention(); retention != 0 {
		s.compactor, err = v3compactor.New(lg, cfg.AutoCompactionMode, retention, s.kv, s)
		if err != nil {
			return nil, fmt.Errorf("kvstore: auto-compaction: %w", err)
		}
		// Only the leader compacts; LeadershipChanged resumes it.
		s.compactor.Pause()
		s.compactor.Run()
		closers = append(closers, s.compactor.Stop)
	}
	s.uberApply = s.newUberApplier()
	s.lessor.SetCheckpointer(s.checkpointLease)
	// Installed last so no constructor above runs it (as etcd's NewServer does).
	be.SetTxPostLockInsideApplyHook(s.txPostLockInsideApplyHook())

	s.read = read.NewRead(readServer{s}, s.r)
	s.running.Store(true)
	if err := s.r.Start(applier{s}); err != nil {
		return nil, fmt.Errorf("kvstore: start raft: %w", err)
	}
	if len(s.cluster.Members()) == 1 {
		// Alone, nobody else can win: skip most of the first election timeout.
		s.r.AdvanceTicks(cfg.electionTicks() - 1)
	}
	s.goAttach(s.read.LinearizableReadLoop)
	s.goAttach(s.revokeExpiredLeasesLoop)
	s.goAttach(s.publish)
	s.goAttach(s.monitorStorageVersion)
	s.servePeers()
	if cfg.Join {
		// Also after a restart: a learner that joined keeps asking until it
		// is a voter (the loop ends at once for a voter).
		s.goAttach(s.promoteLoop)
	}
	go s.stopOnRaftFailure()
	lg.Info("started member",
		zap.String("name", cfg.Name),
		zap.String("member-id", s.memberID.String()),
		zap.String("cluster-id", clusterID.String()),
		zap.String("data-dir", cfg.DataDir),
		zap.Bool("restarted", haveWAL))
	return s, nil
}

// recoverSnapshotBackend installs the newest snapshot's database when the
// backend is older than it: the member crashed after a leader snapshot was
// durable but before its database replaced the backend (etcd's
// RecoverSnapshotBackend).
func recoverSnapshotBackend(cfg Config, be backend.Backend, ci cindex.ConsistentIndexer, hooks backend.Hooks) (backend.Backend, error) {
	lg := cfg.Logger
	snapIndex, err := raftnode.NewestSnapshotIndex(lg, cfg.walDir())
	if err != nil {
		return be, err
	}
	applied := ci.ConsistentIndex()
	if applied >= snapIndex {
		return be, nil
	}
	dbPath, err := snap.New(lg, cfg.snapDir()).DBFilePath(snapIndex)
	if err != nil {
		return be, fmt.Errorf("kvstore: backend (applied index %d) is older than snapshot %d and the snapshot database is missing: %w", applied, snapIndex, err)
	}
	lg.Warn("backend is older than the newest snapshot; installing the snapshot database",
		zap.Uint64("applied-index", applied), zap.Uint64("snapshot-index", snapIndex), zap.String("snapshot-db", dbPath))
	if err := be.Close(); err != nil {
		return be, fmt.Errorf("kvstore: close stale backend: %w", err)
	}
	// From here on the stale backend is closed: failures return nil.
	if err := os.Rename(dbPath, cfg.backendPath()); err != nil {
		return nil, fmt.Errorf("kvstore: install snapshot database: %w", err)
	}
	newbe, err := openBackend(cfg, hooks)
	if err != nil {
		return nil, err
	}
	ci.SetBackend(newbe)
	schema.CreateMetaBucket(newbe.BatchTx())
	if got := ci.ConsistentIndex(); got < snapIndex {
		newbe.Close()
		return nil, fmt.Errorf("kvstore: snapshot database %s holds index %d, older than snapshot %d", dbPath, got, snapIndex)
	}
	return newbe, nil
}

// openBackend opens bbolt, turning the backend's panic on failure into an
// error.
func openBackend(cfg Config, hooks backend.Hooks) (be backend.Backend, err error) {
	bcfg := backend.DefaultBackendConfig(cfg.Logger)
	bcfg.Path = cfg.backendPath()
	bcfg.Hooks = hooks
	bcfg.Timeout = backendOpenTimeout
	bcfg.UnsafeNoFsync = cfg.UnsafeNoFsync
	// etcd's default (--backend-bbolt-freelist-type=map): the array
	// freelist's allocation cost grows with the database's free pages.
	bcfg.BackendFreelistType = bolt.FreelistMapType
	defer func() {
		if p := recover(); p != nil {
			be, err = nil, fmt.Errorf("kvstore: open backend %s: %v", bcfg.Path, p)
		}
	}()
	return backend.New(bcfg), nil
}

func (s *Server) newUberApplier() apply.UberApplier {
	return apply.NewUberApplier(apply.ApplierOptions{
		Logger:               s.lg,
		KV:                   s.kv,
		AlarmStore:           s.alarmStore,
		AuthStore:            s.authStore,
		Lessor:               s.lessor,
		Cluster:              s.cluster,
		RaftStatus:           raftStatus{s},
		SnapshotServer:       snapshotServer{},
		ConsistentIndex:      s.ci,
		Backend:              s.Backend(),
		QuotaBackendBytesCfg: s.cfg.QuotaBackendBytes,
		WarningApplyDuration: 100 * time.Millisecond,
		// etcd's default (feature gate TxnModeWriteWithSharedBuffer, Beta, on).
		TxnModeWriteWithSharedBuffer: true,
	})
}

// txPostLockInsideApplyHook moves the applying index into the consistent
// index once an apply takes the batch lock, so the index lands in the same
// bbolt commit as the data (etcd's getTxPostLockInsideApplyHook).
func (s *Server) txPostLockInsideApplyHook() func() {
	return func() {
		applyingIdx, applyingTerm := s.ci.ConsistentApplyingIndex()
		if applyingIdx > s.ci.UnsafeConsistentIndex() {
			s.ci.SetConsistentIndex(applyingIdx, applyingTerm)
		}
	}
}

// goAttach runs f in a goroutine that Stop waits for. After Stop began it
// does nothing and returns false.
func (s *Server) goAttach(f func()) bool {
	s.wgMu.RLock()
	defer s.wgMu.RUnlock()
	select {
	case <-s.stopping:
		s.lg.Warn("server is stopping; skipped background work")
		return false
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// useStores admits a request that reads the stores locally; it fails with
// ErrStopped once Stop closed them. Callers must release it and must not
// nest it (a pending Stop would deadlock a nested read lock).
func (s *Server) useStores() (release func(), err error) {
	s.storesMu.RLock()
	if s.storesClosed {
		s.storesMu.RUnlock()
		return nil, servererrors.ErrStopped
	}
	return s.storesMu.RUnlock, nil
}

// stopOnRaftFailure stops the member when raft stops by itself (a WAL
// write failed); the cause was already logged by raftnode.
func (s *Server) stopOnRaftFailure() {
	select {
	case <-s.r.Done():
		if err := s.r.Err(); err != nil {
			s.setStopErr(err)
			s.lg.Error("stopping member: raft failed", zap.Error(err))
		}
		s.HardStop()
	case <-s.stopping:
	}
}

// Stop stops the member gracefully: a leader first hands leadership to the
// most up-to-date reachable voter (etcd's TryTransferLeadershipOnShutdown,
// bounded by about an election timeout), then everything stops as in
// HardStop. It is idempotent; concurrent callers all return once it is done.
func (s *Server) Stop() {
	select {
	case <-s.stopping:
	default:
		s.transferLeadershipOnShutdown()
	}
	s.HardStop()
}

// Err says why the member stopped by itself: ErrRemoved after it applied
// its own removal, or the raft failure; nil otherwise.
func (s *Server) Err() error {
	if p := s.stopErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Server) setStopErr(err error) { s.stopErr.CompareAndSwap(nil, &err) }

// HardStop stops the member without handing over leadership (a crash as
// far as the others can tell): background work, raft (and the WAL),
// lessor, mvcc, auth and the backend, the mesh endpoints, then releases
// the data-dir lock. Idempotent.
func (s *Server) HardStop() {
	s.stopOnce.Do(func() {
		s.wgMu.Lock()
		close(s.stopping)
		s.wgMu.Unlock()
		s.cancel()
		if s.compactor != nil {
			s.compactor.Stop()
		}
		s.wg.Wait()
		// Raft goes before the state machine so no apply runs on closed stores.
		s.r.Stop()
		s.closePeers()
		// In-flight local reads see stopping and return; then nothing
		// touches the stores again.
		s.storesMu.Lock()
		s.storesClosed = true
		s.storesMu.Unlock()
		s.lessor.Stop()
		s.kv.Close()
		s.authStore.Close()
		if err := s.Backend().Close(); err != nil {
			s.lg.Warn("failed to close backend", zap.Error(err))
		}
		if s.cfg.MetricsRegisterer != nil {
			s.metrics.unregister(s.cfg.MetricsRegisterer)
		}
		if err := s.dirLock.Close(); err != nil {
			s.lg.Warn("failed to release data directory lock", zap.Error(err))
		}
		s.lg.Info("stopped member", zap.String("member-id", s.memberID.String()))
		close(s.done)
	})
	<-s.done
}
