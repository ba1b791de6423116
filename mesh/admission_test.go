package mesh

import (
	"fmt"
	"testing"
	"time"
)

// The failure log keeps the latest failures and lets one line per remote
// and reason through per interval, counting the ones it quietened.
func TestFailureLogRateLimitsPerRemoteAndReason(t *testing.T) {
	l := newFailureLog(30 * time.Second)
	at := func(sec int, reason string) HandshakeFailure {
		return HandshakeFailure{Addr: "10.0.0.1:5000", Reason: reason, Time: scenarioEpoch.Add(time.Duration(sec) * time.Second)}
	}
	steps := []struct {
		f              HandshakeFailure
		remote         string
		loud           bool
		suppressedSeen int
	}{
		{at(0, "mesh secret mismatch"), "10.0.0.1", true, 0},
		{at(1, "mesh secret mismatch"), "10.0.0.1", false, 0},
		{at(2, "mesh secret mismatch"), "10.0.0.1", false, 0},
		{at(2, "cluster label mismatch"), "10.0.0.1", true, 0}, // another reason
		{at(3, "mesh secret mismatch"), "10.0.0.2", true, 0},   // another remote
		{at(29, "mesh secret mismatch"), "10.0.0.1", false, 0},
		{at(30, "mesh secret mismatch"), "10.0.0.1", true, 3},
		{at(31, "mesh secret mismatch"), "10.0.0.1", false, 0},
	}
	for i, s := range steps {
		loud, suppressed := l.record(s.f, s.remote)
		if loud != s.loud || suppressed != s.suppressedSeen {
			t.Fatalf("step %d: loud %v suppressed %d, want %v %d", i, loud, suppressed, s.loud, s.suppressedSeen)
		}
	}
	for i := 0; i < 2*recentFailures; i++ {
		l.record(HandshakeFailure{Error: fmt.Sprint(i), Time: scenarioEpoch}, "x")
	}
	got := l.snapshot()
	if len(got) != recentFailures || got[len(got)-1].Error != fmt.Sprint(2*recentFailures-1) {
		t.Fatalf("kept %d failures ending with %q, want the latest %d", len(got), got[len(got)-1].Error, recentFailures)
	}
}
