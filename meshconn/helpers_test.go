package meshconn

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

// The channel ids these tests open (members use the peer package's).
const (
	testPacketChannel mesh.ChannelID = 32
	testBulkChannel   mesh.ChannelID = 33
)

// ourGoroutines returns the stacks of goroutines running this package's
// production code (test goroutines are not counted).
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"meshconn.(*Bulk)", "meshconn.(*PacketConn)", "meshconn.(*sender)",
			"meshconn.(*inTransfer)", "meshconn.bodyReader", "meshconn.(*deadline)"} {
			if strings.Contains(g, fn) && !strings.Contains(g, "_test.go") {
				ours = append(ours, g)
				break
			}
		}
	}
	return ours
}

// checkNoLeaks fails t if production goroutines outlive what the test
// closed; they get a few seconds to finish unwinding.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := ourGoroutines()
		if len(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines leaked:\n%s", len(g), strings.Join(g, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
