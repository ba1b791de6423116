package meshtest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

// PSK is the pre-shared key of Config: a fixed key keeps tests off the
// Argon2id cost of a password.
var PSK = bytes.Repeat([]byte{9}, 32)

// Config is a router config tuned for a loaded 2-core machine running
// -race: quick heartbeats and backoffs, a dead timeout generous enough not
// to flap, links encrypted with PSK, errors logged to the test.
func Config(t testing.TB, name mesh.PeerName) mesh.Config {
	cfg := mesh.DefaultConfig()
	cfg.Name = name
	cfg.ClusterLabel = "meshtest"
	cfg.PSK = PSK
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.DeadTimeout = 2 * time.Second
	cfg.BackoffMin = 50 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	cfg.AuthFailureBackoff = 500 * time.Millisecond
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)).Named(string(name))
	return cfg
}

// Network is routers on one in-memory network; every router it starts is
// stopped when the test ends.
type Network struct {
	*memnet.Network
	t testing.TB
}

// NewNetwork returns an empty in-memory network for t.
func NewNetwork(t testing.TB) *Network { return &Network{Network: memnet.New(), t: t} }

// Start starts a router with cfg on host (cfg.Transport is set to the
// host; ListenAddr must be on it).
func (n *Network) Start(host string, cfg mesh.Config) *mesh.Router {
	n.t.Helper()
	cfg.Transport = n.Host(host)
	r, err := mesh.New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { _ = r.Stop() })
	return r
}

// WaitConnected waits until every router reaches every other one.
func WaitConnected(t testing.TB, timeout time.Duration, routers ...*mesh.Router) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, a := range routers {
			for _, b := range routers {
				if a != b && !a.Reachable(b.Name()) {
					all = false
				}
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("routers not connected after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
