package mesh

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// countingTransport counts dials per address.
type countingTransport struct {
	Transport
	mu    sync.Mutex
	dials map[string]int
}

func (t *countingTransport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	t.mu.Lock()
	t.dials[addr]++
	t.mu.Unlock()
	return t.Transport.Dial(ctx, addr)
}

func (t *countingTransport) count(addr string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dials[addr]
}

// refusedLines counts the log lines at Warn or above that report a refused
// handshake, and checks each names its reason.
func refusedLines(t *testing.T, logs *observer.ObservedLogs, reason string) int {
	t.Helper()
	n := 0
	for _, e := range logs.FilterLevelExact(zapcore.ErrorLevel).All() {
		if !strings.Contains(e.Message, "refused") {
			continue
		}
		n++
		if !strings.Contains(e.Message, reason) {
			t.Errorf("refusal logged without the reason %q: %q %v", reason, e.Message, e.ContextMap())
		}
	}
	return n
}

// A peer refused for its secret or label must back off (AuthFailureBackoff)
// rather than redial at once, even when it is alone and the refusing
// address is a seed, and both sides log the refusal once per backoff
// period, with its reason.
func TestRefusedPeerBacksOffAndLogsOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tweak  func(*Config)
		reason string
	}{
		{"wrong secret", func(cfg *Config) { cfg.PSK = bytes.Repeat([]byte{1}, 32) }, "mesh secret mismatch"},
		{"wrong label", func(cfg *Config) { cfg.ClusterLabel = "another-cluster" }, "cluster label mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			goodCore, goodLogs := observer.New(zap.InfoLevel)
			c.start("a", func(cfg *Config) {
				cfg.AuthFailureBackoff = DefaultConfig().AuthFailureBackoff
				cfg.Logger = zap.New(goodCore)
				// a also dials the refused peer's address as a seed.
				cfg.Seeds = []string{"evil:7946"}
			})
			badCore, badLogs := observer.New(zap.InfoLevel)
			ct := &countingTransport{Transport: c.net.Host("evil"), dials: map[string]int{}}
			c.start("evil", func(cfg *Config) {
				tc.tweak(cfg)
				cfg.AuthFailureBackoff = DefaultConfig().AuthFailureBackoff
				cfg.Transport = ct
				cfg.Logger = zap.New(badCore)
			}, "a")
			time.Sleep(5 * time.Second)
			if n := ct.count("a:7946"); n < 1 || n > 3 {
				t.Errorf("refused peer dialled its seed %d times in 5 s, want 1..3", n)
			}
			st := c.routers["a"].Status()
			if n := len(st.HandshakeFailures); n > 6 {
				t.Errorf("cluster side saw %d refused handshakes in 5 s: %+v", n, st.HandshakeFailures)
			}
			if n := refusedLines(t, badLogs, tc.reason); n < 1 || n > 2 {
				t.Errorf("refused side logged %d refusal lines at error level, want 1..2", n)
			}
			if n := refusedLines(t, goodLogs, tc.reason); n < 1 || n > 2 {
				t.Errorf("cluster side logged %d refusal lines at error level, want 1..2", n)
			}
			var target *TargetStatus
			for _, ts := range c.routers["evil"].Status().Targets {
				if ts.Addr == "a:7946" {
					target = &ts
				}
			}
			if target == nil || target.State != "waiting" || time.Until(target.NextTry) < 20*time.Second {
				t.Errorf("seed target not backed off for AuthFailureBackoff: %+v", target)
			}
		})
	}
}
