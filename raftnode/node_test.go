package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	serverstorage "go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// waitTimeout is generous: tests share two cores with other work.
const waitTimeout = 30 * time.Second

// recordingApplier is a state machine that remembers normal entries and
// applies conf changes to the node, skipping what it already holds.
type recordingApplier struct {
	node *Node

	mu      sync.Mutex
	applied uint64
	data    []string // payloads of applied normal entries, in order
	indexes []uint64 // their indexes
	leader  atomic.Uint64
	commits atomic.Int64 // SnapshotData calls
}

func (a *recordingApplier) ApplySnapshot(*raftpb.Snapshot) error {
	return errors.New("unexpected leader snapshot in a one-member test")
}

func (a *recordingApplier) ApplyEntries(ents []*raftpb.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range ents {
		if e.GetIndex() <= a.applied {
			continue
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			if len(e.Data) > 0 {
				a.data = append(a.data, string(e.Data))
				a.indexes = append(a.indexes, e.GetIndex())
			}
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.Data, &cc); err != nil {
				return err
			}
			a.node.ApplyConfChange(&cc)
		}
		a.applied = e.GetIndex()
	}
	return nil
}

func (a *recordingApplier) SnapshotData() ([]byte, error) {
	a.commits.Add(1)
	return []byte("state"), nil
}

func (a *recordingApplier) DatabaseSnapshot() (io.ReadCloser, int64, error) {
	return io.NopCloser(bytes.NewReader(nil)), 0, nil
}

func (a *recordingApplier) LeadershipChanged(lead uint64, _, _ bool) { a.leader.Store(lead) }

func (a *recordingApplier) snapshot() (applied uint64, data []string, indexes []uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied, append([]string(nil), a.data...), append([]uint64(nil), a.indexes...)
}

func testNodeConfig(t *testing.T, dir string, snapshotCount uint64) Config {
	return Config{
		Logger:                 zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		WALDir:                 filepath.Join(dir, "wal"),
		SnapDir:                filepath.Join(dir, "snap"),
		TickInterval:           10 * time.Millisecond,
		ElectionTicks:          10,
		SnapshotCount:          snapshotCount,
		SnapshotCatchUpEntries: 3,
	}
}

func startNew(t *testing.T, cfg Config) (*Node, *recordingApplier) {
	t.Helper()
	n, err := Create(cfg, Bootstrap{NodeID: 1, ClusterID: 0x42, Peers: []raft.Peer{{ID: 1}}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return run(t, n, 0)
}

func run(t *testing.T, n *Node, applied uint64) (*Node, *recordingApplier) {
	t.Helper()
	a := &recordingApplier{node: n, applied: applied}
	if err := n.Start(a); err != nil {
		t.Fatalf("Start: %v", err)
	}
	testutil.Eventually(t, waitTimeout, "leadership", n.IsLeader)
	return n, a
}

func proposeAll(t *testing.T, n *Node, a *recordingApplier, prefix string, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		err := n.Propose(ctx, []byte(fmt.Sprintf("%s%d", prefix, i)))
		cancel()
		if err != nil {
			t.Fatalf("Propose %d: %v", i, err)
		}
	}
	testutil.Eventually(t, waitTimeout, "proposals applied", func() bool {
		_, data, _ := a.snapshot()
		return len(data) > 0 && data[len(data)-1] == fmt.Sprintf("%s%d", prefix, count-1)
	})
}

func TestCreateRefusesExistingWAL(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), 100)
	n, _ := startNew(t, cfg)
	n.Stop()
	if _, err := Create(cfg, Bootstrap{NodeID: 1, Peers: []raft.Peer{{ID: 1}}}); err == nil {
		t.Fatal("Create over an existing WAL succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no WAL dir", func(c *Config) { c.WALDir = "" }},
		{"no snap dir", func(c *Config) { c.SnapDir = "" }},
		{"election ticks too small", func(c *Config) { c.ElectionTicks = 1 }},
		{"negative tick", func(c *Config) { c.TickInterval = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testNodeConfig(t, dir, 10)
			tt.mutate(&cfg)
			if _, err := Create(cfg, Bootstrap{NodeID: 1, Peers: []raft.Peer{{ID: 1}}}); err == nil {
				t.Fatal("Create accepted an invalid config")
			}
		})
	}
	if _, err := Create(testNodeConfig(t, dir, 10), Bootstrap{}); err == nil {
		t.Fatal("Create accepted NodeID 0")
	}
}

// TestSnapshotCompactsAndRestartDoesNotReapply checks periodic snapshots,
// log compaction, and that a restart resumes after the applied index.
func TestSnapshotCompactsAndRestartDoesNotReapply(t *testing.T) {
	dir := t.TempDir()
	cfg := testNodeConfig(t, dir, 5)
	n, a := startNew(t, cfg)
	proposeAll(t, n, a, "v", 30)
	applied, data, _ := a.snapshot()
	if len(data) != 30 {
		t.Fatalf("applied %d entries, want 30", len(data))
	}
	testutil.Eventually(t, waitTimeout, "log compaction", func() bool {
		first, _ := n.raftStorage.FirstIndex()
		return first > 10
	})
	if a.commits.Load() == 0 {
		t.Fatal("snapshot taken without committing the state machine first")
	}
	snaps, _ := filepath.Glob(filepath.Join(cfg.SnapDir, "*.snap"))
	if len(snaps) == 0 {
		t.Fatal("no .snap files written")
	}
	if n.Term() == 0 || n.CommittedIndex() < applied || n.AppliedIndex() < applied {
		t.Fatalf("term %d committed %d applied %d; applier saw %d", n.Term(), n.CommittedIndex(), n.AppliedIndex(), applied)
	}
	n.Stop()

	n2, err := Restart(cfg, Recovery{ConfState: &raftpb.ConfState{Voters: []uint64{1}}, AppliedIndex: applied})
	if err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if n2.ID() != 1 || n2.ClusterID() != 0x42 {
		t.Fatalf("restarted ids = %x/%x, want 1/42", n2.ID(), n2.ClusterID())
	}
	n2, a2 := run(t, n2, applied)
	defer n2.Stop()
	proposeAll(t, n2, a2, "w", 3)
	_, data2, idx2 := a2.snapshot()
	if len(data2) != 3 || !strings.HasPrefix(data2[0], "w") {
		t.Fatalf("after restart applied %v, want only w0..w2 (nothing re-applied)", data2)
	}
	if idx2[0] <= applied {
		t.Fatalf("new entry index %d not above previous applied %d", idx2[0], applied)
	}
}

func TestRestartNeedsStateAtLeastAtSnapshot(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), 3)
	n, a := startNew(t, cfg)
	proposeAll(t, n, a, "v", 10)
	n.Stop()
	_, err := Restart(cfg, Recovery{ConfState: &raftpb.ConfState{Voters: []uint64{1}}, AppliedIndex: 1})
	if err == nil || !strings.Contains(err.Error(), "older than snapshot") {
		t.Fatalf("Restart with a stale state machine: err = %v, want an 'older than snapshot' error", err)
	}
}

func TestRestartRepairsTornTail(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), 1000)
	n, a := startNew(t, cfg)
	proposeAll(t, n, a, "v", 20)
	n.Stop()

	seg, end := testutil.LastWALSegment(t, cfg.WALDir)
	// Cut the last record in half, as a crash during a write would.
	if err := os.Truncate(seg, end-5); err != nil {
		t.Fatal(err)
	}
	n2, err := Restart(cfg, Recovery{ConfState: &raftpb.ConfState{Voters: []uint64{1}}})
	if err != nil {
		t.Fatalf("Restart after a torn tail: %v", err)
	}
	if _, err := os.Stat(seg + ".broken"); err != nil {
		t.Fatalf("repair kept no copy of the torn segment: %v", err)
	}
	n2, a2 := run(t, n2, 0)
	defer n2.Stop()
	// Everything but possibly the torn last record replays, in order.
	testutil.Eventually(t, waitTimeout, "replay", func() bool { _, d, _ := a2.snapshot(); return len(d) >= 19 })
	_, data, _ := a2.snapshot()
	for i := 0; i < 19; i++ {
		if data[i] != fmt.Sprintf("v%d", i) {
			t.Fatalf("replayed entry %d = %q, want v%d", i, data[i], i)
		}
	}
	proposeAll(t, n2, a2, "w", 1)
}

func TestRestartRejectsCorruptWAL(t *testing.T) {
	// Garbage at several places inside the log; whether it surfaces as a CRC
	// mismatch or as a bogus "torn tail", Restart must refuse it.
	tests := []struct {
		name     string
		fraction float64
	}{
		{"first quarter", 0.25},
		{"middle", 0.5},
		{"third quarter", 0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testNodeConfig(t, t.TempDir(), 1000)
			n, a := startNew(t, cfg)
			proposeAll(t, n, a, "v", 20)
			applied, _, _ := a.snapshot()
			n.Stop()

			seg, end := testutil.LastWALSegment(t, cfg.WALDir)
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 24), int64(float64(end)*tt.fraction)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			before, _ := os.ReadFile(seg)
			// The state machine's applied index is the witness that tells
			// garbage mid-log (refused) from a torn tail (repaired).
			_, err = Restart(cfg, Recovery{ConfState: &raftpb.ConfState{Voters: []uint64{1}}, AppliedIndex: applied})
			if err == nil || !strings.Contains(err.Error(), "corrupt") {
				t.Fatalf("Restart on a corrupt WAL: err = %v, want a 'corrupt' error", err)
			}
			after, _ := os.ReadFile(seg)
			if !bytes.Equal(before, after) {
				t.Fatal("a corrupt WAL was modified; it must be left for inspection")
			}
		})
	}
}

// failingStorage fails every Save once armed, like a full disk.
type failingStorage struct {
	serverstorage.Storage
	armed atomic.Bool
}

func (f *failingStorage) Save(st *raftpb.HardState, ents []*raftpb.Entry) error {
	if f.armed.Load() {
		return fmt.Errorf("write wal: %w", syscall.ENOSPC)
	}
	return f.Storage.Save(st, ents)
}

func TestWALWriteFailureStopsWithoutAcknowledging(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), 1000)
	n, err := Create(cfg, Bootstrap{NodeID: 1, Peers: []raft.Peer{{ID: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	fs := &failingStorage{Storage: n.storage}
	n.storage = fs
	n, a := run(t, n, 0)
	proposeAll(t, n, a, "ok", 3)

	fs.armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_ = n.Propose(ctx, []byte("lost"))
	select {
	case <-n.Done():
	case <-time.After(waitTimeout):
		t.Fatal("node kept running after a failed WAL write")
	}
	if err := n.Err(); err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Err() = %v, want the ENOSPC cause", err)
	}
	_, data, _ := a.snapshot()
	for _, d := range data {
		if d == "lost" {
			t.Fatal("an entry whose WAL write failed was applied")
		}
	}
	n.Stop() // idempotent after a fatal stop
	if err := n.Propose(ctx, []byte("after")); err == nil {
		t.Fatal("Propose on a stopped node succeeded")
	}
}

func TestStopWithoutStart(t *testing.T) {
	cfg := testNodeConfig(t, t.TempDir(), 10)
	n, err := Create(cfg, Bootstrap{NodeID: 1, Peers: []raft.Peer{{ID: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	if err := n.Start(&recordingApplier{node: n}); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop: err = %v, want ErrStopped", err)
	}
}
