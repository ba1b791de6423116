package meshconn_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
	"github.com/meshetcd/meshetcd/meshconn"
)

// The channel ids both ends agree on (members use the peer package's).
const (
	raftChannel mesh.ChannelID = 32
	bulkChannel mesh.ChannelID = 33
)

// Two peers on an in-memory network: Raft messages as datagrams, and a
// snapshot as a bulk transfer whose Send returns nil only once the
// receiver accepted it.
func Example() {
	nw := memnet.New()
	start := func(name string, seeds ...string) *mesh.Router {
		cfg := mesh.DefaultConfig()
		cfg.Name = mesh.PeerName(name)
		cfg.ClusterLabel = "example"
		cfg.InsecurePlaintext = true
		cfg.Transport = nw.Host(name)
		cfg.ListenAddr = name + ":2380"
		cfg.Seeds = seeds
		r, err := mesh.New(cfg)
		if err != nil {
			log.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			log.Fatal(err)
		}
		return r
	}
	a, b := start("a"), start("b", "a:2380")
	defer a.Stop()
	defer b.Stop()
	for !a.Reachable("b") {
		time.Sleep(10 * time.Millisecond)
	}

	pa, _ := meshconn.Listen(a, raftChannel, meshconn.PacketConfig{})
	pb, _ := meshconn.Listen(b, raftChannel, meshconn.PacketConfig{})
	defer pa.Close()
	defer pb.Close()
	if _, err := pa.WriteTo([]byte("MsgApp"), meshconn.MeshAddr{Peer: "b"}); err != nil {
		log.Fatal(err) // errors.Is(err, mesh.ErrNoRoute) etc.: report the peer unreachable
	}
	buf := make([]byte, pb.MaxDatagramSize())
	pb.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := pb.ReadFrom(buf)
	fmt.Println(string(buf[:n]), "from", from, err)

	ba, _ := meshconn.NewBulk(a, bulkChannel, meshconn.BulkConfig{})
	bb, _ := meshconn.NewBulk(b, bulkChannel, meshconn.BulkConfig{
		Handler: func(ctx context.Context, in *meshconn.Incoming) error {
			n, err := io.Copy(io.Discard, in.Body) // e.g. snap.SaveDBFrom(in.Body, index)
			fmt.Printf("got %q and %d bytes from %s\n", in.Meta, n, in.Src)
			return err
		},
	})
	defer ba.Close()
	defer bb.Close()
	err = ba.Send(context.Background(), "b", []byte("MsgSnap"), bytes.NewReader(make([]byte, 3<<20)))
	fmt.Println("snapshot sent:", err) // nil: report SnapshotFinish; else SnapshotFailure
	// Output:
	// MsgApp from mesh://a <nil>
	// got "MsgSnap" and 3145728 bytes from a
	// snapshot sent: <nil>
}
