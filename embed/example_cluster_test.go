package embed_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/meshetcd/meshetcd/embed"
	"github.com/meshetcd/meshetcd/embed/embedtest"
)

// ExampleStartCluster runs a 3-member cluster inside the process (on an
// in-memory mesh; leave Network out for loopback TCP) and uses it for an
// ephemeral lock: the lock lives in a lease-backed session, so it
// disappears with its holder.
func ExampleStartCluster() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := embed.StartCluster(ctx, 3, embed.ClusterOptions{Network: embedtest.NewNetwork()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	cli := c.Client() // connected to all three members

	// Two workers, each with its own session (lease).
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		log.Fatal(err)
	}
	s2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		log.Fatal(err)
	}
	defer s2.Close()

	l1 := concurrency.NewMutex(s1, "/locks/job")
	l2 := concurrency.NewMutex(s2, "/locks/job")
	if err := l1.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("worker 1 holds the lock")
	if err := l2.TryLock(ctx); err == concurrency.ErrLocked {
		fmt.Println("worker 2 must wait")
	}

	// Worker 1 goes away: closing its session revokes the lease, which
	// releases the lock.
	if err := s1.Close(); err != nil {
		log.Fatal(err)
	}
	if err := l2.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("worker 2 holds the lock")
	fmt.Println("members:", len(c.Members()))
	// Output:
	// worker 1 holds the lock
	// worker 2 must wait
	// worker 2 holds the lock
	// members: 3
}
