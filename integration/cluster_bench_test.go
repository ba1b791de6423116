package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshetcd/meshetcd/embed"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// 3-member in-process cluster (embed.StartCluster on memnet, fsync on),
// 100 clients over 10 connections spread over the members, fully
// connected vs with the link between the leader and one follower cut (the
// mesh relays that follower's traffic through the other one):
//
//	go test -run '^$' -bench 'Cluster3' -benchtime 5000x ./integration/
func BenchmarkCluster3Put(b *testing.B) {
	forEachClusterTopology(b, func(b *testing.B, conns []*clientv3.Client) {
		val := string(make([]byte, 256))
		runConcurrent(b, conns, func(ctx context.Context, c *clientv3.Client, i int) error {
			_, err := c.Put(ctx, fmt.Sprintf("bench/%08d", i), val)
			return err
		})
	})
}

func BenchmarkCluster3RangeLinearizable(b *testing.B) {
	forEachClusterTopology(b, func(b *testing.B, conns []*clientv3.Client) {
		for i := 0; i < 1000; i++ {
			if _, err := conns[0].Put(context.Background(), fmt.Sprintf("bench/%08d", i), "value"); err != nil {
				b.Fatal(err)
			}
		}
		runConcurrent(b, conns, func(ctx context.Context, c *clientv3.Client, i int) error {
			_, err := c.Get(ctx, fmt.Sprintf("bench/%08d", i%1000))
			return err
		})
	})
}

func forEachClusterTopology(b *testing.B, fn func(b *testing.B, conns []*clientv3.Client)) {
	for _, cut := range []bool{false, true} {
		name := "connected"
		if cut {
			name = "leader-follower-link-cut"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir() // a data dir of our own: fsync on, as in production
			ec, c := startInProcess(b, 3, embed.ClusterOptions{DataDir: dir})
			c.WaitHealthy(b)
			if cut {
				l := c.WaitLeader(b)
				ec.Cut(l, follower(c, l))
				c.WaitHealthy(b)
			}
			conns := make([]*clientv3.Client, benchConns)
			for i := range conns {
				conns[i] = c.Client(b, i%3)
			}
			fn(b, conns)
		})
	}
}
