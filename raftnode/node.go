package raftnode

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/pkg/v3/contention"
	"go.etcd.io/etcd/pkg/v3/notify"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	serverstorage "go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

const (
	// readStateTimeout bounds how long the Ready loop waits for the read
	// loop to take a ReadState (etcd: internalTimeout).
	readStateTimeout = time.Second
	// applyQueueLen lets the Ready loop run ahead of a slow apply, like
	// etcd's FIFO scheduler; kvstore refuses proposals long before it fills.
	applyQueueLen = 4096
	// maxInFlightMsgSnap bounds snapshots queued for sending (etcd's value).
	maxInFlightMsgSnap = 16
	// releaseDelayAfterSnapshot keeps log compaction paused after a snapshot
	// was sent so the follower can catch up from the log (etcd's value).
	releaseDelayAfterSnapshot = 30 * time.Second
	// Old snapshot files and released WAL segments kept on disk (etcd's
	// --max-snapshots / --max-wals defaults) and how often to purge.
	maxSnapFiles  = 5
	maxWALFiles   = 5
	purgeInterval = 30 * time.Second
)

// ErrStopped is returned by Start on a node that was already stopped.
var ErrStopped = errors.New("raftnode: stopped")

// toApply is one Ready's worth of work for the apply goroutine.
type toApply struct {
	entries  []*raftpb.Entry
	snapshot *raftpb.Snapshot
	// notifyc is signalled by the Ready loop when the batch's snapshot and
	// entries are durable (and, on a follower with a conf change, again once
	// the apply side consumed the first signal); see etcd raft.go.
	notifyc chan struct{}
}

// Node drives one raft.Node: the Ready loop that persists, sends and hands
// committed entries to the Applier, and the apply goroutine that applies
// them, snapshots and compacts the log. It is safe for concurrent use.
type Node struct {
	lg          *zap.Logger
	cfg         Config
	id          uint64
	clusterID   uint64
	node        raft.Node
	raftStorage *raft.MemoryStorage
	storage     serverstorage.Storage
	snapshotter *snap.Snapshotter

	applier Applier // set once by Start

	readStateC    chan raft.ReadState
	applyc        chan toApply
	msgSnapC      chan *raftpb.Message
	leaderChanged *notify.Notifier
	applyWait     wait.WaitTime

	lead           atomic.Uint64
	term           atomic.Uint64
	committedIndex atomic.Uint64
	appliedIndex   atomic.Uint64

	tickMu     sync.RWMutex
	latestTick time.Time

	confMu    sync.Mutex
	confState *raftpb.ConfState

	inflightSnapshots atomic.Int64

	// Owned by the apply goroutine only.
	appliedTerm         uint64
	snapshotIndex       uint64 // last snapshot saved to disk
	memorySnapshotIndex uint64 // last snapshot in raftStorage (etcd 3.7)

	lifeMu   sync.Mutex
	started  bool
	stopping bool
	stopc    chan struct{} // closed to ask every goroutine to exit
	donec    chan struct{} // closed once everything has exited and the WAL is closed
	wg       sync.WaitGroup
	err      error // first fatal error, guarded by lifeMu

	// heartbeats notices a leader whose Ready loop sends heartbeats to a
	// member later than twice the heartbeat interval (etcd raft.go).
	heartbeats *contention.TimeoutDetector
}

func newNode(cfg Config, id, clusterID uint64, rn raft.Node, ms *raft.MemoryStorage, st serverstorage.Storage,
	ss *snap.Snapshotter, cs *raftpb.ConfState, snapIndex, snapTerm uint64) *Node {
	n := &Node{
		lg:            cfg.Logger,
		cfg:           cfg,
		id:            id,
		clusterID:     clusterID,
		node:          rn,
		raftStorage:   ms,
		storage:       st,
		snapshotter:   ss,
		readStateC:    make(chan raft.ReadState, 1),
		applyc:        make(chan toApply, applyQueueLen),
		msgSnapC:      make(chan *raftpb.Message, maxInFlightMsgSnap),
		leaderChanged: notify.NewNotifier(),
		applyWait:     wait.NewTimeList(),
		confState:     proto.Clone(cs).(*raftpb.ConfState),
		appliedTerm:   snapTerm,
		snapshotIndex: snapIndex,
		stopc:         make(chan struct{}),
		donec:         make(chan struct{}),
		heartbeats:    contention.NewTimeoutDetector(2 * cfg.TickInterval),
	}
	n.memorySnapshotIndex = snapIndex
	n.appliedIndex.Store(snapIndex)
	n.committedIndex.Store(snapIndex)
	return n
}

// Start runs the node: from now on committed entries reach a. It returns
// ErrStopped if the node was stopped, or an error if it already started.
func (n *Node) Start(a Applier) error {
	if a == nil {
		return errors.New("raftnode: Start needs an Applier")
	}
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if n.stopping {
		return ErrStopped
	}
	if n.started {
		return errors.New("raftnode: already started")
	}
	n.started = true
	n.applier = a
	n.wg.Add(3)
	go n.readyLoop()
	go n.applyLoop()
	go n.purgeFiles()
	go n.shutdownWhenStopped()
	return nil
}

// Stop stops the node and waits until the goroutines have exited, raft has
// stopped and the WAL is closed. It is idempotent and safe after a fatal
// error (Done already closed).
func (n *Node) Stop() {
	n.requestStop()
	n.lifeMu.Lock()
	started := n.started
	n.lifeMu.Unlock()
	if !started {
		// Never started: nothing runs that would close donec for us.
		n.closeOnce()
	}
	<-n.donec
}

// Done is closed once the node has stopped, by Stop or by a fatal error.
func (n *Node) Done() <-chan struct{} { return n.donec }

// Err returns the fatal error that stopped the node, or nil.
func (n *Node) Err() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	return n.err
}

func (n *Node) requestStop() {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if !n.stopping {
		n.stopping = true
		close(n.stopc)
	}
}

// fail records a fatal error and stops the member. Nothing written after
// the failure is acknowledged: the failing Ready is never Advanced, so its
// entries are never reported committed.
func (n *Node) fail(err error) {
	n.lifeMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.lifeMu.Unlock()
	n.lg.Error("raft member stopping after a fatal error; acknowledged writes are safe, pending ones are not acknowledged", zap.Error(err))
	n.requestStop()
}

func (n *Node) shutdownWhenStopped() {
	<-n.stopc
	n.wg.Wait()
	n.closeOnce()
}

func (n *Node) closeOnce() {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	select {
	case <-n.donec:
		return
	default:
	}
	n.node.Stop()
	if err := n.storage.Close(); err != nil {
		n.lg.Warn("failed to close WAL", zap.Error(err))
	}
	close(n.donec)
}

// readyLoop is etcd's raftNode.start loop (server/etcdserver/raft.go).
func (n *Node) readyLoop() {
	defer n.wg.Done()
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	isLeader := false
	for {
		select {
		case <-ticker.C:
			n.tick()
		case rd := <-n.node.Ready():
			if err := n.handleReady(rd, &isLeader); err != nil {
				if !errors.Is(err, ErrStopped) {
					n.fail(err)
				}
				return
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) tick() {
	n.tickMu.Lock()
	n.node.Tick()
	n.latestTick = time.Now()
	n.tickMu.Unlock()
}

func (n *Node) handleReady(rd raft.Ready, isLeader *bool) error {
	if rd.SoftState != nil {
		newLeader := rd.SoftState.Lead != raft.None && n.lead.Load() != rd.SoftState.Lead
		n.lead.Store(rd.SoftState.Lead)
		*isLeader = rd.SoftState.RaftState == raft.StateLeader
		n.applier.LeadershipChanged(rd.SoftState.Lead, *isLeader, newLeader)
		if newLeader {
			n.leaderChanged.Notify()
		}
		n.heartbeats.Reset()
	}
	if rd.HardState != nil && rd.HardState.GetTerm() > n.term.Load() {
		n.term.Store(rd.HardState.GetTerm())
	}
	if len(rd.ReadStates) != 0 {
		select {
		case n.readStateC <- rd.ReadStates[len(rd.ReadStates)-1]:
		case <-time.After(readStateTimeout):
			n.lg.Warn("timed out sending read state", zap.Duration("timeout", readStateTimeout))
		case <-n.stopc:
			return ErrStopped
		}
	}

	hasSnap := !raft.IsEmptySnap(rd.Snapshot)
	ap := toApply{entries: rd.CommittedEntries, notifyc: make(chan struct{}, 1)}
	if hasSnap {
		ap.snapshot = proto.Clone(rd.Snapshot).(*raftpb.Snapshot)
	}
	n.updateCommittedIndex(ap)
	select {
	case n.applyc <- ap:
	case <-n.stopc:
		return ErrStopped
	}

	// The leader writes to its disk in parallel with replicating to the
	// followers (raft thesis 10.2.1).
	if *isLeader {
		n.send(n.processMessages(rd.Messages))
	}
	// The snapshot file and its WAL record go first so a restart after a
	// crash here can find the snapshot the following entries build on.
	if hasSnap {
		if err := n.storage.SaveSnap(rd.Snapshot); err != nil {
			return fmt.Errorf("save raft snapshot %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
		}
	}
	if err := n.storage.Save(rd.HardState, rd.Entries); err != nil {
		return fmt.Errorf("save raft hard state and %d entries to WAL: %w", len(rd.Entries), err)
	}
	if hasSnap {
		// fsync the hard state before Release drops older WAL data
		// (etcd issue 10219).
		if err := n.storage.Sync(); err != nil {
			return fmt.Errorf("sync WAL after snapshot: %w", err)
		}
		if !n.signal(ap.notifyc) {
			return ErrStopped
		}
		if err := n.raftStorage.ApplySnapshot(rd.Snapshot); err != nil {
			return fmt.Errorf("load incoming snapshot into raft storage: %w", err)
		}
		n.lg.Info("applied incoming raft snapshot", zap.Uint64("snapshot-index", rd.Snapshot.GetMetadata().GetIndex()))
		if err := n.storage.Release(rd.Snapshot); err != nil {
			return fmt.Errorf("release WAL before snapshot: %w", err)
		}
	}
	if err := n.raftStorage.Append(rd.Entries); err != nil {
		return fmt.Errorf("append %d entries to raft storage: %w", len(rd.Entries), err)
	}

	if !*isLeader {
		msgs := n.processMessages(rd.Messages)
		if !n.signal(ap.notifyc) {
			return ErrStopped
		}
		// A follower or candidate waits until pending conf changes are
		// applied before sending, or it could count votes from removed
		// members (etcd raft.go).
		if hasConfChange(rd.CommittedEntries) && !n.signal(ap.notifyc) {
			return ErrStopped
		}
		n.send(msgs)
	} else if !n.signal(ap.notifyc) {
		return ErrStopped
	}
	n.node.Advance()
	return nil
}

// signal blocks until c accepts a value or the node stops.
func (n *Node) signal(c chan struct{}) bool {
	select {
	case c <- struct{}{}:
		return true
	case <-n.stopc:
		return false
	}
}

func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if e.GetType() == raftpb.EntryConfChange || e.GetType() == raftpb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

func (n *Node) updateCommittedIndex(ap toApply) {
	var ci uint64
	if len(ap.entries) != 0 {
		ci = ap.entries[len(ap.entries)-1].GetIndex()
	}
	if ap.snapshot != nil && ap.snapshot.GetMetadata().GetIndex() > ci {
		ci = ap.snapshot.GetMetadata().GetIndex()
	}
	for {
		old := n.committedIndex.Load()
		if ci <= old || n.committedIndex.CompareAndSwap(old, ci) {
			return
		}
	}
}

// processMessages drops messages to removed members, keeps only the newest
// MsgAppResp, diverts MsgSnap to the apply goroutine, which attaches a
// database snapshot taken at its applied index (etcd raft.go), and merges
// forwarded proposals (coalesceProposals) and a leader's consecutive
// appends to each follower (coalesceAppends).
func (n *Node) processMessages(ms []*raftpb.Message) []*raftpb.Message {
	sentAppResp := false
	keep := make([]bool, len(ms))
	count := 0
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if n.cfg.IsIDRemoved(m.GetTo()) {
			continue
		}
		if m.GetType() == raftpb.MsgAppResp {
			if sentAppResp {
				continue
			}
			sentAppResp = true
		}
		if m.GetType() == raftpb.MsgSnap {
			select {
			case n.msgSnapC <- m:
			default:
				// Raft asks again after ReportSnapshot or the next probe.
				n.lg.Warn("dropped snapshot message; too many in flight", zap.String("to", fmt.Sprintf("%x", m.GetTo())))
				n.node.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
			}
			continue
		}
		if m.GetType() == raftpb.MsgHeartbeat && n.cfg.TickInterval > 0 {
			if ok, exceed := n.heartbeats.Observe(m.GetTo()); !ok {
				n.lg.Warn("leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk",
					zap.String("to", fmt.Sprintf("%x", m.GetTo())), zap.Duration("heartbeat-interval", n.cfg.TickInterval),
					zap.Duration("expected-duration", 2*n.cfg.TickInterval), zap.Duration("exceeded-duration", exceed))
				if n.cfg.HeartbeatSendLate != nil {
					n.cfg.HeartbeatSendLate()
				}
			}
		}
		keep[i] = true
		count++
	}
	if count == 0 {
		return nil
	}
	out := make([]*raftpb.Message, 0, count)
	for i, ok := range keep {
		if ok {
			out = append(out, ms[i])
		}
	}
	return coalesceAppends(coalesceProposals(out, n.cfg.MaxSizePerMsg), n.cfg.MaxSizePerMsg)
}

func (n *Node) send(msgs []*raftpb.Message) {
	if len(msgs) == 0 {
		return
	}
	if n.cfg.Transport == nil {
		// One-member cluster: raft has nobody to talk to. Anything else
		// means a misconfigured multi-member cluster; tell raft.
		for _, m := range msgs {
			if m.GetTo() != n.id {
				n.node.ReportUnreachable(m.GetTo())
			}
		}
		return
	}
	n.cfg.Transport.Send(msgs)
}

// applyLoop is the single goroutine that calls the Applier (etcd's
// applyAll run by the FIFO scheduler).
func (n *Node) applyLoop() {
	defer n.wg.Done()
	for {
		select {
		case ap := <-n.applyc:
			if err := n.applyAll(ap); err != nil {
				if !errors.Is(err, ErrStopped) {
					n.fail(err)
				}
				return
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) applyAll(ap toApply) error {
	if err := n.applySnapshot(ap); err != nil {
		return err
	}
	if err := n.applyCommitted(ap.entries); err != nil {
		return err
	}
	applied := n.appliedIndex.Load()
	n.applyWait.Trigger(applied)

	// Wait for the Ready loop to finish the disk writes before a snapshot,
	// or the applied index could pass the last index in raft storage.
	select {
	case <-ap.notifyc:
	case <-n.stopc:
		return ErrStopped
	}
	if err := n.maybeSnapshot(); err != nil {
		return err
	}
	select {
	case m := <-n.msgSnapC:
		n.sendSnapshot(m)
	default:
	}
	return nil
}

func (n *Node) applySnapshot(ap toApply) error {
	if raft.IsEmptySnap(ap.snapshot) {
		return nil
	}
	idx, term := ap.snapshot.GetMetadata().GetIndex(), ap.snapshot.GetMetadata().GetTerm()
	if idx <= n.appliedIndex.Load() {
		return fmt.Errorf("leader snapshot %d is not newer than applied index %d", idx, n.appliedIndex.Load())
	}
	select {
	case <-ap.notifyc: // the snapshot is durable
	case <-n.stopc:
		return ErrStopped
	}
	n.lg.Info("applying leader snapshot", zap.Uint64("snapshot-index", idx), zap.Uint64("snapshot-term", term))
	if err := n.applier.ApplySnapshot(ap.snapshot); err != nil {
		return fmt.Errorf("apply leader snapshot %d: %w", idx, err)
	}
	n.confMu.Lock()
	n.confState = proto.Clone(snapshotConfState(ap.snapshot)).(*raftpb.ConfState)
	n.confMu.Unlock()
	n.appliedTerm = term
	n.snapshotIndex = idx
	n.memorySnapshotIndex = idx
	n.appliedIndex.Store(idx)
	return nil
}

func snapshotConfState(s *raftpb.Snapshot) *raftpb.ConfState {
	if cs := s.GetMetadata().GetConfState(); cs != nil {
		return cs
	}
	return &raftpb.ConfState{}
}

func (n *Node) applyCommitted(ents []*raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	applied := n.appliedIndex.Load()
	first := ents[0].GetIndex()
	if first > applied+1 {
		return fmt.Errorf("committed entry %d leaves a gap after applied index %d", first, applied)
	}
	if applied+1-first >= uint64(len(ents)) {
		return nil
	}
	ents = ents[applied+1-first:]
	if err := n.applier.ApplyEntries(ents); err != nil {
		return fmt.Errorf("apply entries %d..%d: %w", ents[0].GetIndex(), ents[len(ents)-1].GetIndex(), err)
	}
	last := ents[len(ents)-1]
	n.appliedTerm = last.GetTerm()
	n.appliedIndex.Store(last.GetIndex())
	return nil
}

// memorySnapshotCount is etcd 3.7's: every this many applied entries the
// in-memory raft log gets a snapshot and is compacted, so it holds about
// SnapshotCatchUpEntries entries instead of up to
// SnapshotCount+SnapshotCatchUpEntries.
const memorySnapshotCount = 100

// maybeSnapshot is etcd 3.7's snapshotIfNeededAndCompactRaftLog: every
// SnapshotCount applied entries a raft snapshot goes to disk (and the WAL is
// released); every memorySnapshotCount applied entries one goes into the
// in-memory storage only. Either way the in-memory log is then compacted,
// keeping SnapshotCatchUpEntries.
func (n *Node) maybeSnapshot() error {
	applied := n.appliedIndex.Load()
	toDisk := applied-n.snapshotIndex > n.cfg.SnapshotCount
	toMemory := applied > n.memorySnapshotIndex+memorySnapshotCount
	if !toDisk && !toMemory {
		return nil
	}
	var data []byte
	if toDisk {
		// The state machine must be durable up to applied first, so its
		// consistent index is never behind the snapshot index.
		var err error
		if data, err = n.applier.SnapshotData(); err != nil {
			return fmt.Errorf("prepare snapshot at %d: %w", applied, err)
		}
	}
	n.confMu.Lock()
	cs := proto.Clone(n.confState).(*raftpb.ConfState)
	n.confMu.Unlock()
	s, err := n.raftStorage.CreateSnapshot(applied, cs, data)
	if err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return nil // raft already holds a newer snapshot
		}
		return fmt.Errorf("create raft snapshot at %d: %w", applied, err)
	}
	n.memorySnapshotIndex = applied
	if toDisk {
		if err := n.storage.SaveSnap(s); err != nil {
			return fmt.Errorf("save raft snapshot at %d: %w", applied, err)
		}
		n.snapshotIndex = applied
		if err := n.storage.Release(s); err != nil {
			return fmt.Errorf("release WAL before snapshot %d: %w", applied, err)
		}
		n.lg.Info("saved snapshot", zap.Uint64("snapshot-index", applied))
	}

	if n.inflightSnapshots.Load() != 0 {
		n.lg.Info("skip raft log compaction: a snapshot is being sent")
		return nil
	}
	compactTo := uint64(1)
	if applied > n.cfg.SnapshotCatchUpEntries {
		compactTo = applied - n.cfg.SnapshotCatchUpEntries
	}
	if err := n.raftStorage.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return fmt.Errorf("compact raft log to %d: %w", compactTo, err)
	}
	n.lg.Debug("compacted raft log", zap.Uint64("compact-index", compactTo))
	return nil
}

// sendSnapshot attaches a database snapshot taken now to m, rewriting its
// metadata to the applied index so database and raft state agree (etcd's
// createMergedSnapshotMessage).
func (n *Node) sendSnapshot(m *raftpb.Message) {
	to := m.GetTo()
	if n.cfg.Transport == nil {
		n.node.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	if _, err := n.applier.SnapshotData(); err != nil {
		n.lg.Warn("cannot commit state machine for snapshot", zap.Error(err))
		n.node.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	rc, size, err := n.applier.DatabaseSnapshot()
	if err != nil {
		n.lg.Warn("cannot snapshot database for follower", zap.String("to", fmt.Sprintf("%x", to)), zap.Error(err))
		n.node.ReportSnapshot(to, raft.SnapshotFailure)
		return
	}
	n.confMu.Lock()
	cs := proto.Clone(n.confState).(*raftpb.ConfState)
	n.confMu.Unlock()
	m = proto.Clone(m).(*raftpb.Message)
	if m.Snapshot == nil {
		m.Snapshot = &raftpb.Snapshot{}
	}
	m.Snapshot.Metadata = &raftpb.SnapshotMetadata{
		Index:     new(n.appliedIndex.Load()),
		Term:      new(n.appliedTerm),
		ConfState: cs,
	}
	msg := snap.NewMessage(m, rc, size)
	n.inflightSnapshots.Add(1)
	n.cfg.Transport.SendSnapshot(*msg)
	n.lg.Info("sending database snapshot", zap.String("to", fmt.Sprintf("%x", to)), zap.Int64("bytes", size))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.inflightSnapshots.Add(-1)
		select {
		case ok := <-msg.CloseNotify():
			if ok {
				select {
				case <-time.After(releaseDelayAfterSnapshot):
				case <-n.stopc:
				}
			}
		case <-n.stopc:
		}
	}()
}

// purgeFiles removes old snapshot files and WAL segments no longer locked,
// like etcd's purgeFile.
func (n *Node) purgeFiles() {
	defer n.wg.Done()
	snapDone, snapErrc := fileutil.PurgeFileWithDoneNotify(n.lg, n.cfg.SnapDir, "snap", maxSnapFiles, purgeInterval, n.stopc)
	walDone, walErrc := fileutil.PurgeFileWithDoneNotify(n.lg, n.cfg.WALDir, "wal", maxWALFiles, purgeInterval, n.stopc)
	select {
	case err := <-snapErrc:
		n.lg.Warn("failed to purge old snapshot files", zap.Error(err))
	case err := <-walErrc:
		n.lg.Warn("failed to purge old WAL files", zap.Error(err))
	case <-n.stopc:
	}
	// Purging stops with stopc; wait so no purge runs after the WAL closed.
	<-n.stopc
	<-snapDone
	<-walDone
}
