package testutil

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"
)

// pollInterval is how often Eventually checks its condition.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond until it holds, and fails the test when timeout
// passes first, naming what it waited for.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollInterval)
	}
}

// The range 30000–31999 is for test ports; a per-process offset keeps
// parallel `go test` processes apart, and each port is checked free before
// use (the kernel's ephemeral ports, which clients use, are left alone).
var ports struct {
	mu   sync.Mutex
	next int
}

// FreePort is a port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ports.mu.Lock()
	defer ports.mu.Unlock()
	if ports.next == 0 {
		ports.next = 30000 + (os.Getpid()%20)*100
	}
	for tries := 0; tries < 2000; tries++ {
		p := ports.next
		ports.next++
		if ports.next > 31999 {
			ports.next = 30000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p
	}
	t.Fatal("no free port in 30000-31999")
	return 0
}

// FreeAddr is "127.0.0.1:<FreePort>".
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// LastWALSegment returns the newest WAL file in walDir and the end of its
// records (segments are preallocated and zero-filled after the records).
func LastWALSegment(t testing.TB, walDir string) (string, int64) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no WAL segments in %s: %v", walDir, err)
	}
	sort.Strings(names)
	last := names[len(names)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	end := int64(len(b))
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return last, end
}

// BurnCPU keeps every core busy with one spinning goroutine per
// GOMAXPROCS until the test ends: the CPU saturation under which failure
// detectors must not be fooled (a starved process mistaking its own
// backlog for a dead peer).
func BurnCPU(t testing.TB) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := uint64(1); ; x = x*6364136223846793005 + 1 {
				if x&0xffff == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
}
