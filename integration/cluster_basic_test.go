package integration

import (
	"fmt"
	"strings"
	"testing"
)

// Static etcd-style bootstrap of 3 and 5 members; every member serves
// linearizable reads of writes made through any other member.
func TestClusterStaticBootstrap(t *testing.T) {
	forEachClusterServer(t, func(t *testing.T, bin string) {
		for _, n := range []int{3, 5} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				c := StartCluster(t, ClusterOptions{Bin: bin, Size: n})
				c.WaitHealthy(t)
				for i := range c.Members {
					cli := c.Client(t, i)
					if _, err := cli.Put(ctx(t), fmt.Sprintf("k%d", i), "v"); err != nil {
						t.Fatalf("put via %d: %v", i, err)
					}
				}
				for i := range c.Members {
					resp, err := c.Client(t, i).Get(ctx(t), "k", clientv3WithPrefix()...)
					if err != nil || len(resp.Kvs) != n {
						t.Fatalf("get via %d: %v %v", i, resp, err)
					}
				}
				out := c.MustCtl(t, []int{0}, "member", "list")
				if got := strings.Count(strings.TrimSpace(out), "\n") + 1; got != n {
					t.Fatalf("member list has %d lines, want %d:\n%s", got, n, out)
				}
				for _, m := range c.Members {
					if !strings.Contains(out, m.Name) || !strings.Contains(out, m.PeerURL) || !strings.Contains(out, m.ClientURL) {
						t.Errorf("member list lacks %s %s %s:\n%s", m.Name, m.PeerURL, m.ClientURL, out)
					}
				}
			})
		}
	})
}

// The same bootstrap with every member in its own network namespace.
func TestClusterInNetns(t *testing.T) {
	requireNetns(t)
	forEachClusterServer(t, func(t *testing.T, bin string) {
		lab := NewNetLab(t, 3)
		c := StartCluster(t, ClusterOptions{Bin: bin, Lab: lab})
		c.WaitHealthy(t)
		if _, err := c.Client(t).Put(ctx(t), "a", "b"); err != nil {
			t.Fatal(err)
		}
		out := c.MustCtl(t, []int{1}, "endpoint", "status", "--cluster")
		if strings.Count(out, "\n") != 3 {
			t.Fatalf("endpoint status --cluster:\n%s", out)
		}
	})
}
