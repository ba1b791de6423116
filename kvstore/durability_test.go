package kvstore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/raftnode"
)

func TestStopAndReopenKeepsEveryWrite(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(t, dir))
	var lastRev int64
	for i := 0; i < 50; i++ {
		lastRev = mustPut(t, s, fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i)).Header.Revision
	}
	id, cid := s.MemberID(), s.ClusterID()
	s.Stop()
	select {
	case <-s.StopNotify():
	default:
		t.Fatal("StopNotify not closed after Stop")
	}

	s = startServer(t, testConfig(t, dir))
	defer s.Stop()
	if s.MemberID() != id || s.ClusterID() != cid {
		t.Fatalf("ids after restart = %s/%s, want %s/%s", s.MemberID(), s.ClusterID(), id, cid)
	}
	for i := 0; i < 50; i++ {
		r := mustGet(t, s, fmt.Sprintf("k%02d", i))
		if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != fmt.Sprintf("v%d", i) {
			t.Fatalf("k%02d after restart = %v", i, r.Kvs)
		}
	}
	if r := mustPut(t, s, "next", "x"); r.Header.Revision != lastRev+1 {
		t.Fatalf("revision after restart = %d, want %d", r.Header.Revision, lastRev+1)
	}
	if ms := s.Members(); len(ms) != 1 || ms[0].ID != id || ms[0].Name != "default" || len(ms[0].ClientURLs) == 0 {
		t.Fatalf("members after restart = %+v", ms)
	}
}

// TestRestartAfterSnapshots uses a tiny SnapshotCount so the raft log is
// snapshotted and compacted many times; a restart must neither lose nor
// re-apply anything.
func TestRestartAfterSnapshots(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 5
	cfg.SnapshotCatchUpEntries = 2
	s := startServer(t, cfg)
	for i := 0; i < 40; i++ {
		mustPut(t, s, "counter", strconv.Itoa(i))
	}
	s.Stop()
	snaps, _ := filepath.Glob(filepath.Join(dir, "member", "snap", "*.snap"))
	if len(snaps) == 0 {
		t.Fatal("no raft snapshots written with SnapshotCount 5")
	}

	s = startServer(t, cfg)
	defer s.Stop()
	r := mustGet(t, s, "counter")
	// 40 puts of one key: version 40, created at rev 2, modified at rev 41.
	// A re-applied put would bump version and revision.
	if kv := r.Kvs[0]; string(kv.Value) != "39" || kv.Version != 40 || kv.ModRevision != 41 || r.Header.Revision != 41 {
		t.Fatalf("counter after restart = %+v (header rev %d), want value 39 version 40 mod 41", kv, r.Header.Revision)
	}
	if rev := mustPut(t, s, "counter", "40").Header.Revision; rev != 42 {
		t.Fatalf("next revision = %d, want 42", rev)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(t, dir))
	defer s.Stop()
	start := time.Now()
	_, err := New(context.Background(), testConfig(t, dir))
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second New on a held data dir: err = %v, want an 'in use' error", err)
	}
	// Not a timing assertion on speed, just that it did not wait on bbolt's
	// or the WAL's lock for ages.
	if took := time.Since(start); took > waitTimeout/2 {
		t.Fatalf("second New took %v", took)
	}
	mustPut(t, s, "still", "works")
}

func TestCorruptWAL(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, seg string, end int64)
		wantErr bool
	}{
		{"torn tail is repaired", func(t *testing.T, seg string, end int64) {
			if err := os.Truncate(seg, end-5); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"garbage in the middle is an error", func(t *testing.T, seg string, end int64) {
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 32), end/2); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := startServer(t, testConfig(t, dir))
			for i := 0; i < 20; i++ {
				mustPut(t, s, fmt.Sprintf("k%02d", i), "v")
			}
			s.Stop()
			seg, end := testutil.LastWALSegment(t, filepath.Join(dir, "member", "wal"))
			tt.corrupt(t, seg, end)

			s, err := New(context.Background(), testConfig(t, dir))
			if tt.wantErr {
				if err == nil {
					s.Stop()
					t.Fatal("New on a corrupt WAL succeeded")
				}
				if !strings.Contains(err.Error(), "corrupt") {
					t.Fatalf("error %q does not say the WAL is corrupt", err)
				}
				// The lock must be released so an operator can retry.
				if s, err := New(context.Background(), testConfig(t, dir)); err == nil || strings.Contains(err.Error(), "in use") {
					if s != nil {
						s.Stop()
					}
					t.Fatalf("retry after a failed New: err = %v, want the corruption again, not a held lock", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New after a torn tail: %v", err)
			}
			defer s.Stop()
			<-s.ReadyNotify()
			// Acknowledged puts precede the torn record (the tail holds
			// only raft metadata written after them).
			r, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
			if err != nil || r.Count != 20 {
				t.Fatalf("keys after repair = %v, %v; want 20", r, err)
			}
		})
	}
}

const crashChildEnv = "KVSTORE_CRASH_CHILD_DIR"

// TestCrashChild is the child half of TestCrashKeepsAcknowledgedWrites: it
// writes until killed, printing each acknowledged key.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashKeepsAcknowledgedWrites")
	}
	cfg := testConfig(t, dir)
	s := startServer(t, cfg)
	for i := 0; ; i++ {
		key := fmt.Sprintf("crash%06d", i)
		mustPut(t, s, key, "v")
		fmt.Printf("ACK %s\n", key)
	}
}

// TestCrashKeepsAcknowledgedWrites kills a member with SIGKILL mid-write
// (no Stop, no flush) and checks every acknowledged write survives.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // in case of an early failure
	var acked []string
	sc := bufio.NewScanner(out)
	deadline := time.AfterFunc(waitTimeout, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() && len(acked) < 200 {
		if key, ok := strings.CutPrefix(sc.Text(), "ACK "); ok {
			acked = append(acked, key)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	go func() { // drain so Wait returns
		for sc.Scan() {
		}
	}()
	_ = cmd.Wait()
	if len(acked) < 200 {
		t.Fatalf("child acknowledged only %d writes before dying", len(acked))
	}

	s := startServer(t, testConfig(t, dir))
	defer s.Stop()
	for _, key := range acked {
		if r := mustGet(t, s, key); len(r.Kvs) != 1 {
			t.Fatalf("acknowledged key %s lost in the crash", key)
		}
	}
}

// TestRestartInstallsNewerSnapshotDatabase simulates a crash after a leader
// snapshot became durable but before its database replaced the backend:
// the backend is older than the newest snapshot and <index>.snap.db waits
// in the snap directory.
func TestRestartInstallsNewerSnapshotDatabase(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 5
	dbPath := filepath.Join(dir, "member", "snap", "db")

	s := startServer(t, cfg)
	mustPut(t, s, "old", "1")
	s.Stop()
	stale, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}

	s = startServer(t, cfg)
	for i := 0; i < 20; i++ {
		mustPut(t, s, fmt.Sprintf("new%02d", i), "v")
	}
	s.Stop()
	snapIndex, err := raftnode.NewestSnapshotIndex(cfg.Logger, filepath.Join(dir, "member", "wal"))
	if err != nil || snapIndex == 0 {
		t.Fatalf("newest snapshot index = %d, %v", snapIndex, err)
	}
	current, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "member", "snap", fmt.Sprintf("%016x.snap.db", snapIndex)), current, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dbPath, stale, 0o600); err != nil {
		t.Fatal(err)
	}

	s = startServer(t, cfg)
	defer s.Stop()
	r, err := s.Range(testCtx(t), &pb.RangeRequest{Key: []byte("new"), RangeEnd: []byte("nex")})
	if err != nil || r.Count != 20 {
		t.Fatalf("keys after installing the snapshot database = %v, %v; want 20", r, err)
	}
}

func TestRestartWithStaleBackendAndNoSnapshotDatabaseFails(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.SnapshotCount = 5
	dbPath := filepath.Join(dir, "member", "snap", "db")
	s := startServer(t, cfg)
	s.Stop()
	stale, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	s = startServer(t, cfg)
	for i := 0; i < 20; i++ {
		mustPut(t, s, fmt.Sprintf("k%02d", i), "v")
	}
	s.Stop()
	if err := os.WriteFile(dbPath, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := New(context.Background(), cfg); err == nil {
		s.Stop()
		t.Fatal("New with a backend older than the snapshot and no snapshot database succeeded")
	} else if !strings.Contains(err.Error(), "older than snapshot") {
		t.Fatalf("error %q does not explain the stale backend", err)
	}
}
