package kvstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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

// The cached series of etcd_server_request_duration_seconds count into the
// same labels as a lookup would, and exist only once used.
func TestObserveRequestSeries(t *testing.T) {
	m := &serverMetrics{
		requestDuration:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "d"}, []string{"type", "success"}),
		requestObservers: newRequestObservers("Put", "Range"),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.requestDuration)
	start := time.Now()
	m.observeRequest("Put", start, nil)
	m.observeRequest("Put", start, nil)
	m.observeRequest("Put", start, errors.New("x"))
	m.observeRequest("Compaction", start, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := ""
			for _, l := range mt.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			got[key] = mt.GetHistogram().GetSampleCount()
		}
	}
	want := map[string]uint64{"success=true type=Put ": 2, "success=false type=Put ": 1, "success=true type=Compaction ": 1}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d observations, want %d (all: %v)", k, got[k], n, got)
		}
	}
}
