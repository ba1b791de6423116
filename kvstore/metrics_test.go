package kvstore

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func gatherGauge(t *testing.T, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func TestServerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, t.TempDir())
	cfg.MetricsRegisterer = reg
	s := startServer(t, cfg)
	mustPut(t, s, "k", "v")
	for name, check := range map[string]func(float64) bool{
		"etcd_server_has_leader":                func(v float64) bool { return v == 1 },
		"etcd_server_is_leader":                 func(v float64) bool { return v == 1 },
		"etcd_server_leader_changes_seen_total": func(v float64) bool { return v >= 1 },
		"etcd_server_proposals_committed_total": func(v float64) bool { return v >= float64(s.AppliedIndex()) && v > 0 },
		"etcd_server_proposals_applied_total":   func(v float64) bool { return v > 0 },
		"etcd_server_proposals_pending":         func(v float64) bool { return v == 0 },
		"etcd_server_id":                        func(v float64) bool { return v == 1 },
	} {
		v, ok := gatherGauge(t, reg, name)
		if !ok || !check(v) {
			t.Errorf("%s = %v (present %v)", name, v, ok)
		}
	}

	// One member per registry: a second one is refused, cleanly.
	cfg2 := testConfig(t, t.TempDir())
	cfg2.MetricsRegisterer = reg
	if s2, err := New(context.Background(), cfg2); err == nil {
		s2.Stop()
		t.Fatal("second member on the same registry started")
	} else if !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("error %q does not mention metrics", err)
	}

	s.Stop()
	if _, ok := gatherGauge(t, reg, "etcd_server_has_leader"); ok {
		t.Fatal("metrics still registered after Stop")
	}
	s = startServer(t, cfg) // registers again after a restart
	s.Stop()
}
