package raftnode

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"
)

func TestRequiredMessageSizeCoversAFullBatch(t *testing.T) {
	// A batch of tiny entries is where protobuf framing costs most.
	const maxSize = 64 << 10
	m := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: new(uint64(1)), From: new(uint64(2)),
		Term: new(uint64(1 << 40)), LogTerm: new(uint64(1 << 40)), Index: new(uint64(1 << 50)), Commit: new(uint64(1 << 50))}
	size := 0
	for i := uint64(0); size <= maxSize; i++ {
		e := &raftpb.Entry{Term: new(uint64(1 << 40)), Index: new(1<<50 + i), Type: raftpb.EntryNormal.Enum()}
		size += proto.Size(e)
		m.Entries = append(m.Entries, e)
	}
	if got, limit := proto.Size(m), RequiredMessageSize(maxSize); got > limit {
		t.Fatalf("a batch of %d tiny entries marshals to %d bytes > RequiredMessageSize %d", len(m.Entries), got, limit)
	}
}

// sizedTransport is a Transport with a message size limit.
type sizedTransport struct{ max int }

func (sizedTransport) Send([]*raftpb.Message)      {}
func (t sizedTransport) MaxMessageSize() int       { return t.max }
func (sizedTransport) SendSnapshot(m snap.Message) { m.CloseWithError(nil) }

func TestCreateRefusesTooSmallTransport(t *testing.T) {
	dir := t.TempDir()
	_, err := Create(Config{
		WALDir: filepath.Join(dir, "wal"), SnapDir: filepath.Join(dir, "snap"),
		MaxSizePerMsg: 2 << 20,
		Transport:     sizedTransport{max: 1 << 20},
	}, Bootstrap{NodeID: 1, ClusterID: 1})
	if err == nil || !strings.Contains(err.Error(), "MaxDatagramSize") {
		t.Fatalf("Create with a 1 MiB transport and MaxSizePerMsg 2 MiB: err = %v; want a clear size error", err)
	}
}
