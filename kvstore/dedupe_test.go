package kvstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/etcd/server/v3/etcdserver/apply"
	servererrors "go.etcd.io/etcd/server/v3/etcdserver/errors"
	"go.etcd.io/etcd/server/v3/storage/backend"
)

func TestRequestID(t *testing.T) {
	withHeader, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 77, Username: "u"}, Put: &pb.PutRequest{Key: []byte("k")}})
	withID, _ := proto.Marshal(&pb.InternalRaftRequest{ID: 5, Header: &pb.RequestHeader{ID: 77}})
	for _, tc := range []struct {
		name string
		data []byte
		want uint64
	}{
		{"header id", withHeader, 77},
		{"request id wins", withID, 5},
		{"empty", nil, 0},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0},
		{"truncated", withHeader[:len(withHeader)-2], 0},
	} {
		if got := requestID(tc.data); got != tc.want {
			t.Errorf("%s: requestID = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestRetriedRequestAppliedOnce commits the same request twice (a retry
// whose original was not lost after all): the second copy is skipped, also
// after a restart that reloads the records from the backend.
func TestRetriedRequestAppliedOnce(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(t, dir))
	data, err := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 0xabc}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	proposeAndSettle := func(s *Server) {
		t.Helper()
		if err := s.r.Propose(testCtx(t), data); err != nil {
			t.Fatal(err)
		}
		// A barrier write behind it: once it is applied, so is the copy.
		mustPut(t, s, "barrier", time.Now().String())
	}
	proposeAndSettle(s)
	rev := mustGet(t, s, "k").Kvs[0].ModRevision
	proposeAndSettle(s)
	r := mustGet(t, s, "k")
	if got := r.Kvs[0].ModRevision; got != rev || r.Kvs[0].Version != 1 {
		t.Fatalf("second copy applied: mod revision %d (want %d), version %d", got, rev, r.Kvs[0].Version)
	}
	s.Stop()

	s = startServer(t, testConfig(t, dir))
	defer s.Stop()
	proposeAndSettle(s)
	if r := mustGet(t, s, "k"); r.Kvs[0].ModRevision != rev || r.Kvs[0].Version != 1 {
		t.Fatalf("copy after restart applied: %+v", r.Kvs[0])
	}
}

// The proposal stamp is read back by requestInfo, and etcd's own unmarshal
// (what apply.Apply does) still sees the request unchanged.
func TestProposedAtStamp(t *testing.T) {
	plain, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 77}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	stamped := appendProposedAt(append([]byte(nil), plain...), 4242)
	if id, at := requestInfo(stamped); id != 77 || at != 4242 {
		t.Fatalf("requestInfo = %d, %d; want 77, 4242", id, at)
	}
	if id, at := requestInfo(plain); id != 77 || at != 0 {
		t.Fatalf("unstamped requestInfo = %d, %d; want 77, 0", id, at)
	}
	var r pb.InternalRaftRequest
	if err := proto.Unmarshal(stamped, &r); err != nil || r.Header.ID != 77 || string(r.Put.Key) != "k" || string(r.Put.Value) != "v" {
		t.Fatalf("etcd's unmarshal of a stamped request: %v, %+v", err, &r)
	}
}

// A copy committed more than dedupeWindow entries after its stamp is
// refused whatever the records say (the original's record may be pruned);
// one at the edge of the window is applied (and recorded) normally.
func TestStaleCopyRefused(t *testing.T) {
	j := &dedupeJournal{}
	s := &Server{lg: zap.NewNop(), dd: newDedupe(nil, j), w: wait.New()}
	plain, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 9}, Put: &pb.PutRequest{Key: []byte("k")}})
	const stamp = 1000
	data := appendProposedAt(plain, stamp)
	if !s.isDuplicate(data, stamp+dedupeWindow+1) {
		t.Fatal("a copy committed past the window was not refused")
	}
	if len(j.unsaved) != 0 {
		t.Fatal("a refused copy was recorded")
	}
	if s.isDuplicate(data, stamp+dedupeWindow) {
		t.Fatal("a copy at the edge of the window was refused")
	}
	if len(j.unsaved) != 1 || j.unsaved[0] != (dedupeRecord{9, stamp + dedupeWindow}) {
		t.Fatalf("journal = %v, want id 9 at %d", j.unsaved, stamp+dedupeWindow)
	}
	// Unstamped entries (written before the stamp existed) are never stale.
	other, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 10}, Put: &pb.PutRequest{Key: []byte("k")}})
	if s.isDuplicate(other, stamp+10*dedupeWindow) {
		t.Fatal("an unstamped entry was refused")
	}
}

// A member that caught up through a leader snapshot while one of its own
// requests was in flight never applies the original (it is inside the
// snapshot), so nothing answers the waiter with the original's response.
// The first copy the proposer re-proposes is skipped as a duplicate and
// answers it with etcd's "request timed out" at once, instead of leaving
// the client to the 7 s request timeout. A duplicate of a request this
// member applied itself leaves a waiter of the same id alone (its answer
// came from the original), and so does a normal first apply.
func TestDuplicateOfRequestInsideSnapshotAnswersWaiter(t *testing.T) {
	s := &Server{lg: zap.NewNop(), w: wait.New()}
	const snapshotIndex = 500
	// Request 7 was applied at 450, inside the snapshot the member loaded.
	s.dd = newDedupe([]dedupeRecord{{id: 7, index: 450}}, &dedupeJournal{})
	s.dd.loadedThrough = snapshotIndex
	entry := func(id uint64) []byte {
		b, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id}, Put: &pb.PutRequest{Key: []byte("k")}})
		return appendProposedAt(b, 400)
	}
	inSnapshot := s.w.Register(7)
	if !s.isDuplicate(entry(7), 600) {
		t.Fatal("a copy of a request applied inside the snapshot was not skipped")
	}
	select {
	case x := <-inSnapshot:
		if r, ok := x.(*apply.Result); !ok || !errors.Is(r.Err, servererrors.ErrTimeout) {
			t.Fatalf("waiter got %#v; want a result with %v", x, servererrors.ErrTimeout)
		}
	default:
		t.Fatal("the waiter of a request applied inside the snapshot was left waiting")
	}

	// Request 8 is applied by this member after the snapshot; a waiter
	// registered again under its id (as after apply answered it) must not
	// be answered by the duplicate.
	if s.isDuplicate(entry(8), 601) {
		t.Fatal("a first copy was skipped")
	}
	again := s.w.Register(8)
	if !s.isDuplicate(entry(8), 602) {
		t.Fatal("a copy of a request this member applied was not skipped")
	}
	select {
	case x := <-again:
		t.Fatalf("a duplicate of a request applied here answered a waiter: %#v", x)
	default:
	}
	s.w.Trigger(8, nil)
}

// journaledBackend is a bbolt backend whose commits save the journal in
// h, as a member's backend does (without etcd's consistent-index hook).
func journaledBackend(t *testing.T) (backend.Backend, *journalOnlyHooks) {
	t.Helper()
	h := &journalOnlyHooks{j: &dedupeJournal{}}
	bcfg := backend.DefaultBackendConfig(zap.NewNop())
	bcfg.Hooks = h
	bcfg.Path = filepath.Join(t.TempDir(), "db")
	be := backend.New(bcfg)
	t.Cleanup(func() { be.Close() })
	return be, h
}

// journalOnlyHooks saves j; a test swaps j (under the batch lock) where a
// member would open a new backend.
type journalOnlyHooks struct{ j *dedupeJournal }

func (h *journalOnlyHooks) OnPreCommitUnsafe(tx backend.UnsafeReadWriter) { h.j.save(tx) }

// TestDedupeMatchesModel drives the compact form past a full window
// of applied entries (some retried, some retried after being forgotten)
// and checks every answer against a plain map pruned the documented way:
// ids applied before pruneBefore(index) are forgotten, all others
// remembered with the index they were applied at. Now and then the backend
// commits and the state is rebuilt from what it holds, as a restart does,
// and expired groups are deleted from it.
// It runs with random ids and with ids as members make them (idutil: a
// counter per member, applied about in the order they were taken).
func TestDedupeMatchesModel(t *testing.T) {
	for _, shape := range []string{"random", "counters"} {
		t.Run(shape, func(t *testing.T) { testDedupeMatchesModel(t, newIDSource(shape, 1)) })
	}
}

// newIDSource returns request ids of one shape: "random" 64-bit ids, or
// "counters": three members' idutil generators taking turns, each id
// applied a few places away from the order it was taken in.
func newIDSource(shape string, seed uint64) func() uint64 {
	rng := rand.New(rand.NewPCG(seed, 2))
	if shape == "random" {
		return func() uint64 { return rng.Uint64() | 1 } // 0 is "no id"
	}
	var next [3]uint64
	for m := range next {
		next[m] = uint64(m+1)<<48 | rng.Uint64()>>24
	}
	return func() uint64 {
		m := rng.IntN(len(next))
		next[m] += 1 + uint64(rng.IntN(3)) // reads take ids too
		return next[m] - uint64(rng.IntN(8))
	}
}

func testDedupeMatchesModel(t *testing.T, newID func() uint64) {
	be, hooks := journaledBackend(t)
	j := hooks.j
	d := loadDedupe(be, j, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[uint64]uint64{}
	var applied []uint64 // ids in apply order, to pick retries from
	const last = dedupeWindow + 6*dedupePruneEvery + 17
	for index := uint64(1); index <= last; index++ {
		id := newID()
		if len(applied) > 0 && rng.IntN(8) == 0 {
			id = applied[rng.IntN(len(applied))] // a retry, maybe forgotten
		}
		at, ok := d.lookup(id)
		if mat, mok := model[id]; ok != mok || at != mat {
			t.Fatalf("index %d: lookup(%x) = %d, %v; model %d, %v", index, id, at, ok, mat, mok)
		}
		if !ok {
			d.add(id, index)
			model[id] = index
			applied = append(applied, id)
		}
		if index%dedupePruneEvery == 0 {
			oldest := pruneBefore(index)
			d.seal(oldest)
			tx := be.BatchTx()
			tx.Lock()
			for _, g := range j.expire(oldest) {
				tx.UnsafeDelete(requestsBucket, g.key())
			}
			tx.Unlock()
			for id, at := range model {
				if at < oldest {
					delete(model, id)
				}
			}
			if d.size() != len(model) || len(d.recent) != 0 {
				t.Fatalf("index %d: %d ids remembered (%d not sealed), model %d", index, d.size(), len(d.recent), len(model))
			}
		}
		if index%20011 == 0 || index == last {
			be.ForceCommit()
			j = &dedupeJournal{}
			tx := be.BatchTx()
			tx.Lock()
			hooks.j = j
			tx.Unlock()
			d = loadDedupe(be, j, index)
			if d.size() != len(model) {
				t.Fatalf("index %d: %d ids after reload, model %d", index, d.size(), len(model))
			}
		}
	}
	if d.size() > dedupeWindow+dedupePruneEvery {
		t.Fatalf("%d ids remembered, more than the window", d.size())
	}
}

// TestDedupeConvertsPerRequestRecords: a backend written by a version that
// kept one key per request (id → index) is converted to one group when
// loaded, and remembers the same ids.
func TestDedupeConvertsPerRequestRecords(t *testing.T) {
	be, hooks := journaledBackend(t)
	tx := be.BatchTx()
	tx.Lock()
	tx.UnsafeCreateBucket(requestsBucket)
	for i := uint64(0); i < 5; i++ {
		k := binary.BigEndian.AppendUint64(nil, 100+i)
		tx.UnsafePut(requestsBucket, k, binary.BigEndian.AppendUint64(nil, 10+i))
	}
	tx.Unlock()
	be.ForceCommit()

	check := func(d dedupe) {
		t.Helper()
		for i := uint64(0); i < 5; i++ {
			if at, ok := d.lookup(100 + i); !ok || at != 10+i {
				t.Fatalf("lookup(%d) = %d, %v; want %d", 100+i, at, ok, 10+i)
			}
		}
		if _, ok := d.lookup(99); ok {
			t.Fatal("an id never applied is remembered")
		}
	}
	check(loadDedupe(be, hooks.j, 20))
	be.ForceCommit()
	var keys [][]byte
	tx.Lock()
	_ = tx.UnsafeForEach(requestsBucket, func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	})
	tx.Unlock()
	if len(keys) != 1 || len(keys[0]) != 17 || keys[0][16] != groupPacked {
		t.Fatalf("bucket keys after conversion = %x, want one group", keys)
	}
	hooks.j = &dedupeJournal{}
	check(loadDedupe(be, hooks.j, 20))
}

// TestDedupeReadsUnpackedGroups: groups written by a version that stored
// 16-byte (id, index) pairs under 16-byte keys are remembered after an
// upgrade, next to packed ones, and deleted by their own key when they
// expire.
func TestDedupeReadsUnpackedGroups(t *testing.T) {
	be, hooks := journaledBackend(t)
	tx := be.BatchTx()
	tx.Lock()
	tx.UnsafeCreateBucket(requestsBucket)
	var v []byte
	for i := uint64(0); i < 5; i++ {
		v = binary.BigEndian.AppendUint64(v, 100+i)
		v = binary.BigEndian.AppendUint64(v, 10+i)
	}
	old := dedupeGroup{first: 10, last: 14}
	tx.UnsafePut(requestsBucket, old.key(), v)
	tx.Unlock()
	hooks.j.add(dedupeRecord{id: 200, index: 15})
	be.ForceCommit() // saves id 200 as a packed group

	hooks.j = &dedupeJournal{}
	d := loadDedupe(be, hooks.j, 20)
	for id, want := range map[uint64]uint64{100: 10, 104: 14, 200: 15} {
		if at, ok := d.lookup(id); !ok || at != want {
			t.Fatalf("lookup(%d) = %d, %v; want %d", id, at, ok, want)
		}
	}
	gone := hooks.j.expire(15)
	if len(gone) != 1 || gone[0] != old || len(gone[0].key()) != 16 {
		t.Fatalf("expired %v, want the unpacked group %v", gone, old)
	}
}

const dedupeCrashChildEnv = "KVSTORE_DEDUPE_CRASH_CHILD_DIR"

// dedupeRequest is the raft request with id putting key dd<id>.
func dedupeRequest(t testing.TB, id uint64) []byte {
	t.Helper()
	data, err := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id}, Put: &pb.PutRequest{Key: fmt.Appendf(nil, "dd%d", id), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDedupeCrashChild is the child half of
// TestDedupeRecordsSurviveCrash: it applies requests with known ids until
// killed, printing each id once applied.
func TestDedupeCrashChild(t *testing.T) {
	dir := os.Getenv(dedupeCrashChildEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestDedupeRecordsSurviveCrash")
	}
	s := startServer(t, testConfig(t, dir))
	for id := uint64(1); ; id++ {
		if err := s.r.Propose(testCtx(t), dedupeRequest(t, id)); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "barrier", "b") // applied after the request
		fmt.Printf("APPLIED %d\n", id)
	}
}

// TestDedupeRecordsSurviveCrash kills a member (SIGKILL: no Stop, no final
// commit) while it applies requests, restarts it and commits a copy of
// every applied request: none may apply again, whether its record reached
// bbolt before the kill or is rebuilt by replaying the WAL.
func TestDedupeRecordsSurviveCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDedupeCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), dedupeCrashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() // in case of an early failure
	deadline := time.AfterFunc(waitTimeout, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	var applied uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() && applied < 300 {
		if v, ok := strings.CutPrefix(sc.Text(), "APPLIED "); ok {
			applied, _ = strconv.ParseUint(v, 10, 64)
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
	if applied < 300 {
		t.Fatalf("child applied only %d requests before dying", applied)
	}

	s := startServer(t, testConfig(t, dir))
	defer s.Stop()
	for id := uint64(1); id <= applied; id++ {
		if err := s.r.Propose(testCtx(t), dedupeRequest(t, id)); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(t, s, "barrier", "after")
	for id := uint64(1); id <= applied; id++ {
		if r := mustGet(t, s, fmt.Sprintf("dd%d", id)); len(r.Kvs) != 1 || r.Kvs[0].Version != 1 {
			t.Fatalf("request %d after the crash: %v (want applied exactly once)", id, r.Kvs)
		}
	}
}

// BenchmarkDedupeWindow is the apply-time cost of remembering request ids
// over a full window: per entry one lookup and one add, a seal and prune
// at every block boundary. "map" is the plain map[id]index form it
// replaced, as reference. heap-B/id is the live heap per remembered id at
// the end (after a GC), the figure the member's RSS follows.
func BenchmarkDedupeWindow(b *testing.B) {
	for _, shape := range []string{"random", "counters"} {
		b.Run(shape, func(b *testing.B) { benchmarkDedupeWindow(b, newIDSource(shape, 3)) })
	}
}

func benchmarkDedupeWindow(b *testing.B, newID func() uint64) {
	const entries = dedupeWindow + dedupePruneEvery
	ids := make([]uint64, 4*entries)
	for i := range ids {
		ids[i] = newID()
	}
	heapPerID := func(b *testing.B, before runtime.MemStats, n int) {
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/id")
	}
	b.Run("map", func(b *testing.B) {
		var before runtime.MemStats
		var seen map[uint64]uint64
		for b.Loop() {
			b.StopTimer()
			seen = nil
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.StartTimer()
			seen = map[uint64]uint64{}
			for i, id := range ids {
				index := uint64(i + 1)
				if _, ok := seen[id]; !ok {
					seen[id] = index
				}
				if oldest := pruneBefore(index); index%dedupePruneEvery == 0 && oldest > 0 {
					for id, at := range seen {
						if at < oldest {
							delete(seen, id)
						}
					}
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/entry")
		b.ReportMetric(0, "ns/op")
		heapPerID(b, before, len(seen))
		runtime.KeepAlive(seen)
	})
	b.Run("packed", func(b *testing.B) {
		var before runtime.MemStats
		var d dedupe
		for b.Loop() {
			b.StopTimer()
			d = dedupe{}
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.StartTimer()
			d = newDedupe(nil, &dedupeJournal{})
			for i, id := range ids {
				index := uint64(i + 1)
				if _, ok := d.lookup(id); !ok {
					d.recent[id] = index // add without the journal: the map form had none
				}
				if index%dedupePruneEvery == 0 {
					d.seal(pruneBefore(index))
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/entry")
		b.ReportMetric(0, "ns/op")
		heapPerID(b, before, d.size())
		runtime.KeepAlive(&d)
	})
}

// TestMarshalProposal: the stamped proposal is etcd's encoding of the
// request plus the stamp, in one buffer that had room for it.
func TestMarshalProposal(t *testing.T) {
	r := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1 << 60, Username: "u"}, Put: &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 300)}}
	plain, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, committed := range []uint64{0, 1, 1 << 63} {
		data, size, err := marshalProposal(r, committed)
		if err != nil || size != len(plain) || string(data[:size]) != string(plain) {
			t.Fatalf("marshalProposal(%d) = %d bytes (size %d), %v; want the %d-byte encoding first", committed, len(data), size, err, len(plain))
		}
		if id, at := requestInfo(data); id != 1<<60 || at != committed {
			t.Fatalf("requestInfo = %d, %d; want %d, %d", id, at, uint64(1<<60), committed)
		}
		if len(data) > cap(data) || cap(data) > size+proposedAtMaxLen {
			t.Fatalf("buffer of cap %d for %d bytes: stamping reallocated", cap(data), len(data))
		}
	}
}

// BenchmarkMarshalProposal: marshal and stamp a put of 256 bytes, in one
// buffer ("presized") or marshalled then appended to ("append", the way
// it was done before).
func BenchmarkMarshalProposal(b *testing.B) {
	r := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1 << 60}, Put: &pb.PutRequest{Key: []byte("key00001"), Value: make([]byte, 256)}}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, err := proto.Marshal(r)
			if err != nil {
				b.Fatal(err)
			}
			_ = appendProposedAt(data, 123456)
		}
	})
	b.Run("presized", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := marshalProposal(r, 123456); err != nil {
				b.Fatal(err)
			}
		}
	})
}
