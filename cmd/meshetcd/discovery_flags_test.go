package main

import (
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/embed"
)

// --discovery-timeout bounds mesh discovery; default like --join-timeout.
func TestDiscoveryTimeoutFlag(t *testing.T) {
	if o := mustParse(t, []string{"--discovery-size", "3", "--discovery-timeout", "5s"}, fakeEnv{}); o.cfg.DiscoveryTimeout != 5*time.Second {
		t.Errorf("--discovery-timeout 5s: %v", o.cfg.DiscoveryTimeout)
	}
	if o := mustParse(t, nil, fakeEnv{"MESHETCD_DISCOVERY_TIMEOUT": "7s"}); o.cfg.DiscoveryTimeout != 7*time.Second {
		t.Errorf("MESHETCD_DISCOVERY_TIMEOUT=7s: %v", o.cfg.DiscoveryTimeout)
	}
	if o := mustParse(t, nil, fakeEnv{}); o.cfg.DiscoveryTimeout != embed.DefaultJoinTimeout {
		t.Errorf("default discovery timeout: %v", o.cfg.DiscoveryTimeout)
	}
	mustFail(t, []string{"--discovery-timeout", "-1s"}, fakeEnv{}, "--discovery-timeout")
}
