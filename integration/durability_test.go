package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestDurabilityAcrossSIGKILL writes from many clients, SIGKILLs the member
// mid-stream, restarts it, and checks that every acknowledged write is
// there with its revision, and that revisions continue after the restart.
func TestDurabilityAcrossSIGKILL(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	c := p.Client(t)

	type ack struct {
		key, val string
		rev      int64
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, v := fmt.Sprintf("dur/%d/%05d", w, i), fmt.Sprintf("v%d-%d", w, i)
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := c.Put(cctx, k, v)
				cancel()
				if err != nil {
					return // the member is gone; this write was not acknowledged
				}
				mu.Lock()
				acked = append(acked, ack{k, v, r.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	// Let writes flow, then kill without warning.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Kill()
	close(stop)
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}

	p.Restart()
	c2 := p.Client(t)
	r, err := c2.Get(ctx(t), "dur/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	vals := map[string]string{}
	for _, kv := range r.Kvs {
		got[string(kv.Key)] = kv.ModRevision
		vals[string(kv.Key)] = string(kv.Value)
	}
	var maxRev int64
	lost := 0
	for _, a := range acked {
		if got[a.key] != a.rev || vals[a.key] != a.val {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write %s=%s@%d lost after SIGKILL (now %q@%d)", a.key, a.val, a.rev, vals[a.key], got[a.key])
			}
		}
		maxRev = max(maxRev, a.rev)
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, len(acked))
	}
	pr, err := c2.Put(ctx(t), "after-restart", "x")
	if err != nil {
		t.Fatal(err)
	}
	if pr.Header.Revision <= maxRev {
		t.Errorf("revision after restart %d is not beyond the last acknowledged %d", pr.Header.Revision, maxRev)
	}
	t.Logf("%d acknowledged writes survived SIGKILL", len(acked))
}

// TestDurabilityEtcdctlKill: a put acknowledged to etcdctl survives an
// immediate SIGKILL.
func TestDurabilityEtcdctlKill(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	p.MustCtl(t, "put", "last-word", "persisted")
	p.Kill()
	p.Restart()
	if out := p.MustCtl(t, "get", "last-word", "--print-value-only"); strings.TrimSpace(out) != "persisted" {
		t.Fatalf("get after SIGKILL+restart = %q", out)
	}
}

// lastWAL returns the newest WAL file of a data dir.
func lastWAL(t *testing.T, dataDir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no WAL files in %s: %v", dataDir, err)
	}
	sort.Strings(files)
	return files[len(files)-1]
}

// walDataEnd is the offset just past the last non-zero byte: WAL files are
// preallocated with zeros, so that is where the written records end.
func walDataEnd(b []byte) int {
	return len(bytes.TrimRight(b, "\x00"))
}

func assertNoPanic(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
		t.Errorf("meshetcd panicked:\n%s", tail(out, 60))
	}
}

// startAfterDamage starts the member on a damaged data dir. It must either
// come up (repaired) or exit 1 with a clear error — never panic or hang.
func startAfterDamage(t *testing.T, p *Proc) (started bool) {
	t.Helper()
	p.start()
	deadline := time.After(readyTimeout)
	for {
		s, wake := p.Logs.snapshot()
		if strings.Contains(s, readyLine) {
			p.WaitReady()
			assertNoPanic(t, p.Logs.String())
			t.Logf("member started on the damaged WAL")
			return true
		}
		select {
		case <-wake:
		case <-p.done:
			out := p.Logs.String()
			assertNoPanic(t, out)
			if code := p.cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("refused to start with exit code %d, want 1", code)
			}
			if !strings.Contains(strings.ToLower(out), "wal") {
				t.Errorf("refusal does not mention the WAL:\n%s", tail(out, 20))
			}
			t.Logf("member refused the damaged WAL:\n%s", tail(out, 3))
			return false
		case <-deadline:
			t.Fatalf("neither ready nor exited after %v:\n%s", readyTimeout, tail(p.Logs.String(), 40))
		}
	}
}

// TestTornWALTail cuts the last WAL record in half (what a crash during a
// write leaves): the member must repair the tail and keep every write
// before the torn one, or refuse clearly. Never panic.
func TestTornWALTail(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	for i := 0; i < 20; i++ {
		p.MustCtl(t, "put", fmt.Sprintf("w/%02d", i), "v")
	}
	p.Kill()

	walPath := lastWAL(t, p.DataDir)
	b, err := os.ReadFile(walPath)
	if err != nil {
		t.Fatal(err)
	}
	end := walDataEnd(b)
	// Truncate in the middle of the last record: a torn write.
	cut := end - 12
	if cut <= 0 {
		t.Fatalf("WAL too short (%d bytes of data)", end)
	}
	if err := os.Truncate(walPath, int64(cut)); err != nil {
		t.Fatal(err)
	}

	if !startAfterDamage(t, p) {
		t.Log("member refused the torn WAL with a clear error")
		return
	}
	out := p.MustCtl(t, "get", "w/", "--prefix", "--keys-only")
	n := strings.Count(out, "w/")
	// The torn record is the last put at most; everything before it stays.
	if n < 19 {
		t.Errorf("after repairing a torn tail only %d of 20 keys remain:\n%s", n, out)
	}
	p.MustCtl(t, "put", "after-repair", "ok")
}

// TestCorruptWALRecord flips bytes inside an earlier record (not a torn
// tail): etcd refuses to start on a CRC mismatch, and so must we, without
// panicking.
func TestCorruptWALRecord(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	for i := 0; i < 20; i++ {
		p.MustCtl(t, "put", fmt.Sprintf("c/%02d", i), strings.Repeat("z", 200))
	}
	p.Kill()
	walPath := lastWAL(t, p.DataDir)
	b, err := os.ReadFile(walPath)
	if err != nil {
		t.Fatal(err)
	}
	end := walDataEnd(b)
	// Corrupt a value in the middle of the written region.
	idx := bytes.Index(b[end/2:end], []byte(strings.Repeat("z", 50)))
	if idx < 0 {
		t.Fatalf("could not find a record payload to corrupt")
	}
	for i := 0; i < 8; i++ {
		b[end/2+idx+i] ^= 0xff
	}
	if err := os.WriteFile(walPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if startAfterDamage(t, p) {
		// Starting is acceptable only if no acknowledged data was lost.
		out := p.MustCtl(t, "get", "c/", "--prefix", "--keys-only")
		if n := strings.Count(out, "c/"); n != 20 {
			t.Errorf("member started on a corrupt WAL and lost data: %d of 20 keys", n)
		}
	}
}
