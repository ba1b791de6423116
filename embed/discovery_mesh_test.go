package embed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

// TestDiscoveryRandomStartsMemnet runs the discovery agreement over real
// mesh routers on an in-memory network: 50 random start orders, delays and
// seed choices for 3 and for 5 members. Every member must bootstrap the same
// n-member set, and so derive the same cluster id.
func TestDiscoveryRandomStartsMemnet(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			for trial := range 50 {
				seed := uint64(n*1000 + trial)
				if err := discoveryTrial(t, n, seed); err != nil {
					t.Fatalf("trial %d (seed %d): %v", trial, seed, err)
				}
			}
		})
	}
}

// TestDiscoveryTooManyNeverSplits starts n+1 members for a size-n cluster
// over memnet routers, in random orders. The agreement cannot always pick
// n of them, but it must never be unsafe: every member that bootstraps does
// so with the same n-member set; the others join that cluster or give up
// with ErrDiscoveryTooMany.
func TestDiscoveryTooManyNeverSplits(t *testing.T) {
	for trial := range 20 {
		seed := uint64(7000 + trial)
		res, err := runDiscovery(t, 4, 3, seed)
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		var set []mesh.PeerName
		for i, r := range res {
			switch {
			case r.err != nil:
				if !errors.Is(r.err, ErrDiscoveryTooMany) {
					t.Fatalf("trial %d member %d: %v", trial, i, r.err)
				}
			case r.dec.kind == decideBootstrap:
				if len(r.dec.set) != 3 || set != nil && !slices.Equal(set, r.dec.set) {
					t.Fatalf("trial %d: member %d bootstrapped [%s], another [%s]", trial, i, joinNames(r.dec.set), joinNames(set))
				}
				set = r.dec.set
			case r.dec.kind == decideJoin:
			default:
				t.Fatalf("trial %d member %d: %s", trial, i, r.dec)
			}
		}
	}
}

type discoveryResult struct {
	dec  decision
	view announcements
	err  error
}

func discoveryTrial(t *testing.T, n int, seed uint64) error {
	results, err := runDiscovery(t, n, n, seed)
	if err != nil {
		return err
	}
	return checkSameBootstrap(results, n)
}

// runDiscovery starts members routers on memnet in a random order, with
// random delays and a random tree of seeds, runs discovery for a size-n
// cluster on each, and returns what each decided.
func runDiscovery(t *testing.T, members, n int, seed uint64) ([]discoveryResult, error) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	nw := memnet.New()
	host := func(i int) string { return fmt.Sprintf("10.1.0.%d", i+1) }
	// Seeds form a random tree (each member names one member earlier in a
	// random permutation), so the mesh is connected, as --peers promises.
	perm := rng.Perm(members)
	seedOf := make([]string, members)
	for k := 1; k < members; k++ {
		seedOf[perm[k]] = host(perm[rng.IntN(k)]) + ":2380"
	}
	start := rng.Perm(members)
	delays := make([]time.Duration, members)
	for i := range delays {
		delays[i] = time.Duration(rng.IntN(40)) * time.Millisecond
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results := make([]discoveryResult, members)
	routers := make([]*mesh.Router, members)
	defer func() {
		for _, r := range routers {
			if r != nil {
				_ = r.Stop()
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, i := range start {
		time.Sleep(delays[i])
		mc := mesh.DefaultConfig()
		mc.Name = mesh.PeerName(host(i) + ":2380")
		mc.ClusterLabel = "tok"
		mc.ListenAddr = host(i) + ":2380"
		mc.InsecurePlaintext = true
		mc.Transport = nw.Host(host(i))
		mc.BackoffMin, mc.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
		mc.RandSeed = seed + uint64(i) + 1
		if seedOf[i] != "" {
			mc.Seeds = []string{seedOf[i]}
		}
		r, err := mesh.New(mc)
		if err != nil {
			return nil, err
		}
		d := newDiscovery(zap.NewNop(), announcement{
			Peer: mc.Name, Name: fmt.Sprintf("m%d", i), PeerURLs: []string{"http://" + string(mc.Name)}, Token: "tok",
		}, time.Now())
		d.conflictGrace = time.Second
		if err := d.register(r); err != nil {
			return nil, err
		}
		if err := r.Start(ctx); err != nil {
			return nil, err
		}
		mu.Lock()
		routers[i] = r
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec, view, err := d.run(ctx, n)
			if err == nil && dec.kind == decideBootstrap {
				// What StartMember announces before it starts kvstore.
				d.update(func(a *announcement) { a.Initial = dec.set })
			}
			results[i] = discoveryResult{dec, view, err}
		}()
	}
	wg.Wait()
	return results, nil
}

// checkSameBootstrap: every member bootstrapped the same n-member set and
// derives the same cluster id from it.
func checkSameBootstrap(results []discoveryResult, n int) error {
	var want []mesh.PeerName
	var wantCID types.ID
	for i, r := range results {
		if r.err != nil {
			return fmt.Errorf("member %d: %w", i, r.err)
		}
		if r.dec.kind != decideBootstrap || len(r.dec.set) != n {
			return fmt.Errorf("member %d decided %s", i, r.dec)
		}
		urls := types.URLsMap{}
		for _, p := range r.dec.set {
			a := r.view[p]
			us, err := types.NewURLs(a.PeerURLs)
			if err != nil {
				return err
			}
			urls[a.Name] = us
		}
		cl, err := membership.NewClusterFromURLsMap(zap.NewNop(), "tok", urls)
		if err != nil {
			return err
		}
		if want == nil {
			want, wantCID = r.dec.set, cl.ID()
		}
		if !slices.Equal(r.dec.set, want) || cl.ID() != wantCID {
			return fmt.Errorf("member %d bootstrapped [%s] (cluster %s), member 0 [%s] (cluster %s)", i, joinNames(r.dec.set), cl.ID(), joinNames(want), wantCID)
		}
	}
	return nil
}
