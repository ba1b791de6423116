package embed

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/mesh"
)

// Network is an in-memory network for a cluster's meshes, with fault
// injection; embedtest.NewNetwork() (mesh/memnet) is one. Each member gets
// its own host on it (Cluster.HostName). It is an option, not a
// dependency, so that the shipped binary does not carry test doubles.
type Network interface {
	// Host is the mesh transport of the host named name.
	Host(name string) mesh.Transport
	// Cut breaks the link between hosts a and b; Heal restores it.
	Cut(a, b string)
	Heal(a, b string)
	// Partition cuts every link between hosts in different groups.
	Partition(groups ...[]string)
	// HealAll removes every fault.
	HealAll()
}

// ClusterOptions shapes an in-process cluster (StartCluster). The zero value
// is a good default: members on loopback TCP (free ports), static
// bootstrap, a temporary data directory removed by Close.
type ClusterOptions struct {
	// Network runs the meshes on an in-memory network instead of loopback
	// TCP, for fault injection (Cut, Heal, Partition, HealAll):
	// ClusterOptions{Network: embedtest.NewNetwork()}. nil: loopback TCP,
	// where the fault methods do nothing.
	Network Network
	// Discovery forms the cluster by mesh discovery (--discovery-size n,
	// each member seeded with the previous one) instead of etcd's static
	// --initial-cluster.
	Discovery bool
	// Token is the cluster token and mesh label (default "etcd-cluster").
	Token string
	// MeshPassword encrypts and authenticates the mesh links.
	MeshPassword string
	// DataDir is where member data directories go (DataDir/<name>). Empty
	// means a temporary directory that Close removes; such throw-away
	// members also skip fsync (UnsafeNoFsync) for speed.
	DataDir string
	// Logger receives every member's logs (named by member); nil discards.
	Logger *zap.Logger
	// Configure, when set, adjusts member i's configuration (0-based)
	// before it starts.
	Configure func(i int, cfg *Config)
}

// Cluster is n members running in this process (StartCluster). Its
// methods are safe for concurrent use.
type Cluster struct {
	opts   ClusterOptions
	nw     Network // nil on loopback TCP
	dir    string
	ownDir bool
	token  string

	mu      sync.Mutex
	members []*Member
	next    int // members created so far, for names and hosts
	cli     *clientv3.Client
	closed  bool
}

// StartCluster starts n members in this process and returns once every one
// of them serves linearizable requests, with a client connected to all of
// them. ctx bounds the start. Close stops everything.
func StartCluster(ctx context.Context, n int, opts ClusterOptions) (c *Cluster, err error) {
	if n < 1 {
		return nil, fmt.Errorf("embed: StartCluster needs at least one member, got %d", n)
	}
	c = &Cluster{opts: opts, nw: opts.Network, dir: opts.DataDir, token: opts.Token}
	if c.token == "" {
		c.token = DefaultInitialClusterToken
	}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "meshetcd-cluster-"); err != nil {
			return nil, fmt.Errorf("embed: cluster data directory: %w", err)
		}
		c.ownDir = true
	}
	cl := c // the named result is nil by the time a failing return's defer runs
	defer func() {
		if err != nil {
			_ = cl.Close()
		}
	}()

	cfgs := make([]Config, n)
	var initial []string
	for i := range cfgs {
		cfgs[i], err = c.NewMemberConfig()
		if err != nil {
			return nil, err
		}
		initial = append(initial, cfgs[i].Name+"="+cfgs[i].AdvertisePeerURLs[0].String())
	}
	for i := range cfgs {
		if opts.Discovery {
			cfgs[i].DiscoverySize = n
			if i > 0 {
				cfgs[i].Peers = []string{cfgs[i-1].AdvertisePeerURLs[0].Host}
			}
		} else {
			cfgs[i].InitialCluster = strings.Join(initial, ",")
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfgs[i])
		}
	}

	// Members of a new cluster wait for each other (quorum), so they
	// start together.
	// The first failure cancels the others, which would otherwise wait for
	// a quorum that cannot form.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ms := make([]*Member, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i], errs[i] = StartMember(sctx, cfgs[i])
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	c.mu.Lock()
	for _, m := range ms {
		if m != nil {
			c.members = append(c.members, m)
		}
	}
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("embed: starting a %d-member cluster: %w", n, err)
	}
	var eps []string
	for _, m := range ms {
		eps = append(eps, urlStrings(m.ListenClientURLs())...)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: c.logger().Named("client")})
	if err != nil {
		return nil, fmt.Errorf("embed: cluster client: %w", err)
	}
	c.mu.Lock()
	c.cli = cli
	c.mu.Unlock()
	return c, nil
}

func (c *Cluster) logger() *zap.Logger {
	if c.opts.Logger != nil {
		return c.opts.Logger
	}
	return zap.NewNop()
}

// NewMemberConfig returns the configuration of the cluster's next member
// (name "m<k>", its own host on the in-memory network or a free loopback
// port, client URL on a free loopback port, data under the cluster's
// directory), ready for StartMember once its bootstrap mode is set: for
// example Join with Peers = PeerAddr of a running member, or
// InitialClusterState "existing" after MemberAdd.
func (c *Cluster) NewMemberConfig() (Config, error) {
	c.mu.Lock()
	c.next++
	k := c.next
	c.mu.Unlock()
	cfg := NewConfig()
	cfg.Name = "m" + strconv.Itoa(k)
	cfg.DataDir = filepath.Join(c.dir, cfg.Name)
	cfg.InitialClusterToken = c.token
	cfg.MeshPassword = c.opts.MeshPassword
	cfg.UnsafeNoFsync = c.ownDir
	cfg.Logger = c.logger().Named(cfg.Name)
	zero := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []url.URL{zero}, []url.URL{zero}
	var peer url.URL
	if c.nw != nil {
		host := c.HostName(k - 1)
		peer = url.URL{Scheme: "http", Host: host + ":2380"}
		cfg.MeshTransport = c.nw.Host(host)
	} else {
		port, err := freeLoopbackPort()
		if err != nil {
			return Config{}, err
		}
		peer = url.URL{Scheme: "http", Host: "127.0.0.1:" + port}
	}
	cfg.ListenPeerURLs, cfg.AdvertisePeerURLs = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = ""
	return cfg, nil
}

// StartMember starts one more member of this cluster (configured from
// NewMemberConfig) and adds it to Members and Close.
func (c *Cluster) StartMember(ctx context.Context, cfg Config) (*Member, error) {
	m, err := StartMember(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = m.Close()
		return nil, errors.New("embed: cluster is closed")
	}
	c.members = append(c.members, m)
	return m, nil
}

// Join starts a new member that joins the cluster with --join through
// member 0 (added as a learner, promoted once caught up).
func (c *Cluster) Join(ctx context.Context) (*Member, error) {
	cfg, err := c.NewMemberConfig()
	if err != nil {
		return nil, err
	}
	ms := c.Members()
	if len(ms) == 0 {
		return nil, errors.New("embed: no running member to join")
	}
	cfg.Join = true
	cfg.Peers = []string{ms[0].PeerAddr()}
	return c.StartMember(ctx, cfg)
}

// HostName is member i's host on the in-memory network (0-based, in
// creation order), the name fault injection uses.
func (c *Cluster) HostName(i int) string { return "10.0.0." + strconv.Itoa(i+1) }

// Network is the in-memory network the members' meshes run on
// (ClusterOptions.Network); nil on loopback TCP.
func (c *Cluster) Network() Network { return c.nw }

// Cut breaks the mesh link between members i and j (0-based, creation
// order), like a firewall: the mesh routes around it through the others.
func (c *Cluster) Cut(i, j int) {
	if c.nw != nil {
		c.nw.Cut(c.HostName(i), c.HostName(j))
	}
}

// Heal undoes Cut (and blackholes) between members i and j.
func (c *Cluster) Heal(i, j int) {
	if c.nw != nil {
		c.nw.Heal(c.HostName(i), c.HostName(j))
	}
}

// Partition cuts every link between members in different groups.
func (c *Cluster) Partition(groups ...[]int) {
	if c.nw == nil {
		return
	}
	hs := make([][]string, len(groups))
	for g, idx := range groups {
		for _, i := range idx {
			hs[g] = append(hs[g], c.HostName(i))
		}
	}
	c.nw.Partition(hs...)
}

// HealAll removes every fault.
func (c *Cluster) HealAll() {
	if c.nw != nil {
		c.nw.HealAll()
	}
}

// Client is a client connected to every member's client URLs. It belongs
// to the cluster: Close closes it.
func (c *Cluster) Client() *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cli
}

// Members are the running members in creation order.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Close closes the client and every member, then removes a temporary data
// directory.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cli, ms := c.cli, c.members
	c.mu.Unlock()
	var errs []error
	if cli != nil {
		_ = cli.Close() // a closing client's error is of no interest
	}
	// Followers first, together; then the leader, which then has nobody
	// to hand leadership to and stops at once instead of waiting for a
	// transfer to members that are going away too.
	var followers, leaders []*Member
	for _, m := range ms {
		if s := m.Server(); s.Leader() == s.MemberID() {
			leaders = append(leaders, m)
		} else {
			followers = append(followers, m)
		}
	}
	var mu sync.Mutex
	for _, group := range [][]*Member{followers, leaders} {
		var wg sync.WaitGroup
		for _, m := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := m.Close(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if c.ownDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("embed: removing %s: %w", c.dir, err))
		}
	}
	return errors.Join(errs...)
}
