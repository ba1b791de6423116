package raftnode

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
	"github.com/meshetcd/meshetcd/meshconn"
)

func TestPeerNameFromURLs(t *testing.T) {
	for _, tc := range []struct {
		urls []string
		want mesh.PeerName
		err  string
	}{
		{urls: []string{"http://127.0.0.1:2380"}, want: "127.0.0.1:2380"},
		// Sorted like etcd's membership.NewMember: the first sorted URL wins.
		{urls: []string{"https://10.0.0.2:2380", "http://10.0.0.9:2380"}, want: "10.0.0.9:2380"},
		{urls: []string{"http://[::1]:2380"}, want: "[::1]:2380"},
		{urls: nil, err: "no peer URLs"},
		{urls: []string{"http://host-without-port"}, err: "missing port"},
		{urls: []string{"unix"}, err: "no host:port"},
		{urls: []string{"http://%zz"}, err: "invalid"},
	} {
		got, err := PeerNameFromURLs(tc.urls)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("PeerNameFromURLs(%v) = %q, %v; want error containing %q", tc.urls, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("PeerNameFromURLs(%v) = %q, %v; want %q", tc.urls, got, err, tc.want)
		}
	}
}

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

// meshPair starts two routers on memnet.
func meshPair(t *testing.T) (a, b *mesh.Router) {
	t.Helper()
	nw := memnet.New()
	start := func(name string, seeds ...string) *mesh.Router {
		cfg := mesh.DefaultConfig()
		cfg.Name = mesh.PeerName(name)
		cfg.ClusterLabel = "raftnode-test"
		cfg.PSK = bytes.Repeat([]byte{3}, 32)
		cfg.Transport = nw.Host(name)
		cfg.ListenAddr = name + ":2380"
		cfg.Seeds = seeds
		cfg.DeadTimeout = 2 * time.Second
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
		cfg.MaxDatagramSize = MeshMaxDatagramSize(DefaultMaxSizePerMsg)
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
		r, err := mesh.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop() })
		return r
	}
	a = start("a")
	b = start("b", "a:2380")
	deadline := time.Now().Add(waitTimeout)
	for !a.Reachable("b") || !b.Reachable("a") {
		if time.Now().After(deadline) {
			t.Fatal("routers never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return a, b
}

// TestMeshTransportDropsGarbage feeds undecodable and misaddressed
// datagrams to a bound transport: they are counted, never stepped, and
// the node keeps running.
func TestMeshTransportDropsGarbage(t *testing.T) {
	a, b := meshPair(t)
	tr, err := NewMeshTransport(MeshTransportConfig{Router: a})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got, want := tr.MaxMessageSize(), RequiredMessageSize(DefaultMaxSizePerMsg); got < want {
		t.Fatalf("MaxMessageSize %d < required %d with MeshMaxDatagramSize", got, want)
	}
	dir := t.TempDir()
	n, err := Create(Config{
		Logger: zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel)),
		WALDir: filepath.Join(dir, "wal"), SnapDir: filepath.Join(dir, "snap"),
		Transport:    tr,
		PeerResolver: func(id uint64) (mesh.PeerName, bool) { return "b", id == 2 },
	}, Bootstrap{NodeID: 1, ClusterID: 1, Peers: nil})
	if err != nil {
		t.Fatal(err)
	}
	app := &recordingApplier{node: n}
	if err := n.Start(app); err != nil {
		t.Fatal(err)
	}
	defer n.Stop()

	pc, err := meshconn.Listen(b, meshconn.DefaultRaftChannel, meshconn.PacketConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := meshconn.MeshAddr{Peer: "a"}
	pc.WriteTo([]byte{0xff, 0x00, 0x13, 0x37}, to)
	other, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(99)), From: new(uint64(2))})
	pc.WriteTo(other, to)
	snapMsg, _ := proto.Marshal(&raftpb.Message{Type: raftpb.MsgSnap.Enum(), To: new(uint64(1)), From: new(uint64(2))})
	pc.WriteTo(snapMsg, to)
	deadline := time.Now().Add(waitTimeout)
	for {
		st := tr.Stats()
		if st.Malformed >= 1 && st.Misaddressed >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: garbage not counted", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n.Err() != nil {
		t.Fatalf("node failed: %v", n.Err())
	}

	// A message to an unknown member is reported, not sent.
	tr.Send([]*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), To: new(uint64(7)), From: new(uint64(1))}})
	if st := tr.Stats(); st.SendFailed != 1 {
		t.Fatalf("send to an unknown member: stats %+v, want one failure", st)
	}
}
