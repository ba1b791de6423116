package raftnode

import (
	"testing"
	"time"

	"go.etcd.io/etcd/pkg/v3/contention"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// TestLateHeartbeatIsReported: a heartbeat to a member more than two
// heartbeat intervals after the previous one calls HeartbeatSendLate (etcd's
// etcd_server_heartbeat_send_failures_total); heartbeats on time do not.
func TestLateHeartbeatIsReported(t *testing.T) {
	late := 0
	tick := 20 * time.Millisecond
	n := &Node{
		lg: zap.NewNop(),
		cfg: Config{TickInterval: tick, IsIDRemoved: func(uint64) bool { return false },
			HeartbeatSendLate: func() { late++ }},
		heartbeats: contention.NewTimeoutDetector(2 * tick),
	}
	hb := func() []*raftpb.Message {
		return []*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(2))}}
	}
	n.processMessages(hb())
	n.processMessages(hb())
	if late != 0 {
		t.Fatalf("heartbeats on time reported late %d times", late)
	}
	time.Sleep(3 * tick)
	if out := n.processMessages(hb()); len(out) != 1 {
		t.Fatalf("the late heartbeat was not sent: %v", out)
	}
	if late != 1 {
		t.Fatalf("a heartbeat %v late reported %d times, want 1", 3*tick, late)
	}
}
