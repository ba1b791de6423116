package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkSnapshotCatchUp: a 3-member cluster whose follower was down
// while ~390 MiB were written (6,000 puts of 64 KiB, beyond the entries
// either server keeps) catches up by a Raft snapshot of the whole backend;
// meshetcd streams it over the mesh's bulk path, etcd over its peer HTTP.
// One op is one catch-up, timed from the follower's restart until it
// serves every key; writing the data is not timed. Run it next to etcd
// with bin/etcd present:
//
//	go test -run '^$' -bench 'SnapshotCatchUp' -benchtime 1x -count 5 ./integration/
func BenchmarkSnapshotCatchUp(b *testing.B) {
	for _, sys := range []struct{ name, bin string }{{"meshetcd", bins.meshetcd}, {"etcd", bins.etcd}} {
		if sys.bin == "" {
			continue
		}
		b.Run(sys.name, func(b *testing.B) {
			var took time.Duration
			var bytes int64
			for range b.N {
				b.StopTimer()
				db, d := snapshotCatchUp(b, sys.bin, 6000, 64<<10, b.StartTimer)
				b.StopTimer()
				took += d
				bytes += db
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "s/catch-up")
			b.ReportMetric(float64(bytes)/took.Seconds()/1e6, "backend-MB/s")
			b.ReportMetric(float64(bytes)/float64(b.N)/(1<<20), "backend-MiB")
		})
	}
}

// snapshotCatchUp starts a fresh 3-member cluster of bin, writes n values
// of valSize bytes while a follower is down (with the compaction settings
// that make the leader's log too short for it), restarts the follower and
// waits until it serves all n keys. It calls started (may be nil) right
// before the restart and returns the leader's backend size and how long
// the catch-up took. The follower must have installed a Raft snapshot and
// agree with the others.
func snapshotCatchUp(t testing.TB, bin string, n, valSize int, started func()) (dbSize int64, took time.Duration) {
	t.Helper()
	c := StartCluster(t, ClusterOptions{Bin: bin, Args: []string{"--snapshot-count", "200", "--snapshot-catchup-entries", "50"}})
	defer func() { // free the machine for the next op at once
		for i := range c.Members {
			c.Kill(i)
		}
	}()
	c.WaitHealthy(t)
	l := c.WaitLeader(t)
	f := follower(c, l)
	cli := c.Client(t, l)
	c.Kill(f)
	putMany(t, cli, "big/", n, 8, valSize)
	st, err := cli.Status(ctx(t), c.Endpoints(l)[0])
	if err != nil {
		t.Fatal(err)
	}
	warmFreeMemory(t, warmBytes)
	if started != nil {
		started()
	}
	begin := time.Now()
	c.Restart(f)
	// A fresh client: one made before the kill would still be in gRPC's
	// reconnect backoff (seconds, growing while the member was down), and
	// the catch-up would be timed with it.
	fc := c.Client(t, f)
	for {
		r, err := fc.Get(ctx(t), "big/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err == nil && r.Count == int64(n) {
			break
		}
		if time.Since(begin) > 5*time.Minute {
			t.Fatalf("follower not caught up after %v: %v %v", time.Since(begin), r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	took = time.Since(begin)
	var restored bool
	for _, e := range c.Members[f].Logs.entries() {
		restored = restored || strings.Contains(e.msg(), "restored snapshot")
	}
	if !restored {
		t.Errorf("no raft snapshot installed on the follower")
	}
	c.checkHashes(t)
	// meshetcd's leader logs each bulk transfer: its time and retransmits
	// tell the transfer apart from the rest of the catch-up.
	for _, e := range c.Members[l].Logs.entries() {
		if e.msg() == "sent bulk transfer" {
			t.Logf("leader sent %v bytes in %v (%v retransmits)", e["bytes"], e["took"], e["retransmits"])
		}
	}
	return st.DbSize, took
}

// warmBytes is how much memory warmFreeMemory touches before a timed
// catch-up: more than the follower writes (~400 MiB of database) and
// maps.
const warmBytes = 1 << 30

// warmFreeMemory touches n bytes of fresh anonymous memory and frees them,
// so the timed catch-up that follows finds the kernel's free memory backed
// by the host. On a VM whose balloon reports free pages (virtio-balloon
// free page reporting) the host takes back memory that stays free for a
// few seconds, and the next process to touch it pays a host fault per
// page: the catch-up's follower writes ~400 MiB into the page cache, and
// whichever system ran first in a pair took twice as long, because the
// second one reused the pages the first had just freed. Warming both sides
// the same way right before their timed part measures the servers, not
// the hypervisor's lag.
func warmFreeMemory(t testing.TB, n int) {
	t.Helper()
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Logf("warming free memory: %v", err)
		return
	}
	page := os.Getpagesize()
	for i := 0; i < n; i += page {
		b[i] = 1
	}
	if err := syscall.Munmap(b); err != nil {
		t.Fatalf("warming free memory: %v", err)
	}
}
