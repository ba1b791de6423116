package mesh_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/mesh/memnet"
)

// counterState is an increment-only counter CRDT: one slot per peer, each
// written only by its peer; merge takes the per-slot maximum, so replicas
// converge whatever order or how often updates arrive.
type counterState map[mesh.PeerName]uint64

func (s counterState) Encode() [][]byte {
	var b []byte
	for p, v := range s {
		b = append(b, uint8(len(p)))
		b = append(b, p...)
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return [][]byte{b}
}

func (s counterState) Merge(other mesh.GossipData) mesh.GossipData {
	for p, v := range other.(counterState) {
		if v > s[p] {
			s[p] = v
		}
	}
	return s
}

func decodeCounter(b []byte) (counterState, error) {
	s := counterState{}
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+8 {
			return nil, fmt.Errorf("truncated counter state")
		}
		s[mesh.PeerName(b[1:1+n])] = binary.BigEndian.Uint64(b[1+n:])
		b = b[1+n+8:]
	}
	return s, nil
}

// counterPeer is the application side: it owns the state and implements
// mesh.Gossiper.
type counterPeer struct {
	self    mesh.PeerName
	mu      sync.Mutex
	state   counterState
	channel *mesh.GossipChannel
}

// mergeIn merges received state and returns only what was new.
func (c *counterPeer) mergeIn(msg []byte) (counterState, error) {
	in, err := decodeCounter(msg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := counterState{}
	for p, v := range in {
		if v > c.state[p] {
			c.state[p] = v
			delta[p] = v
		}
	}
	return delta, nil
}

func (c *counterPeer) OnGossip(msg []byte) (mesh.GossipData, error) {
	delta, err := c.mergeIn(msg)
	if err != nil || len(delta) == 0 {
		return nil, err
	}
	return delta, nil
}

func (c *counterPeer) OnGossipBroadcast(_ mesh.PeerName, msg []byte) error {
	_, err := c.mergeIn(msg)
	return err
}

func (c *counterPeer) OnGossipUnicast(_ mesh.PeerName, msg []byte) error {
	_, err := c.mergeIn(msg)
	return err
}

// Gossip returns a copy: the router may merge into what it is given.
func (c *counterPeer) Gossip() mesh.GossipData {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.state)
}

func (c *counterPeer) increment() {
	c.mu.Lock()
	c.state[c.self]++
	update := counterState{c.self: c.state[c.self]}
	c.mu.Unlock()
	c.channel.GossipNeighbourSubset(update)
}

func (c *counterPeer) total() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum uint64
	for _, v := range c.state {
		sum += v
	}
	return sum
}

// Three peers in a line each increment their own slot; gossip makes every
// peer converge on the same total.
func Example_incrementOnlyCounter() {
	network := memnet.New()
	network.Cut("a", "c") // a and c talk only through b
	var peers []*counterPeer
	var routers []*mesh.Router
	names := []string{"a", "b", "c"}
	for i, name := range names {
		cfg := mesh.DefaultConfig()
		cfg.Name = mesh.PeerName(name)
		cfg.ClusterLabel = "counter-example"
		cfg.InsecurePlaintext = true // examples only; set Password in real use
		cfg.Transport = network.Host(name)
		cfg.ListenAddr = name + ":7946"
		cfg.GossipInterval = 200 * time.Millisecond
		if i > 0 {
			cfg.Seeds = []string{names[i-1] + ":7946"} // each peer knows only the previous one
		}
		router, err := mesh.New(cfg)
		if err != nil {
			panic(err)
		}
		peer := &counterPeer{self: cfg.Name, state: counterState{}}
		if peer.channel, err = router.NewGossip(100, "counter", peer); err != nil {
			panic(err)
		}
		if err := router.Start(context.Background()); err != nil {
			panic(err)
		}
		peers = append(peers, peer)
		routers = append(routers, router)
	}
	defer func() {
		for _, r := range routers {
			_ = r.Stop()
		}
	}()

	for i, p := range peers {
		for n := 0; n <= i; n++ {
			p.increment() // a: 1, b: 2, c: 3
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if peers[0].total() == 6 && peers[1].total() == 6 && peers[2].total() == 6 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range peers {
		fmt.Printf("%s sees total %d\n", p.self, p.total())
	}
	// Output:
	// a sees total 6
	// b sees total 6
	// c sees total 6
}
