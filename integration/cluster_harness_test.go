package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// Multi-member cluster harness: members are real processes of the binary
// under test (meshetcd or etcd 3.7.3), bootstrapped etcd-style with
// --initial-cluster, on loopback or each in its own network namespace
// (NetLab). Every process is SIGKILLed at the end of the test.

// soak reports whether the long randomized runs are enabled (make soak).
func soak() bool { return os.Getenv("MESHETCD_SOAK") == "1" }

// ClusterOptions configures StartCluster. Zero values are fine.
type ClusterOptions struct {
	Bin   string   // default: meshetcd under test
	Size  int      // default 3
	Args  []string // extra flags for every member (e.g. --snapshot-count)
	Token string   // --initial-cluster-token; default "mtest-<test>"
	// Lab puts member i in namespace Lab.Hosts[i] (must have ≥ Size hosts).
	Lab *NetLab
	// NoWait starts the processes without waiting for them to be ready.
	NoWait bool
	// PeerScheme is the scheme of the peer URLs: "http" (default) or "https".
	PeerScheme string
	// MemberArgs, when set, adds flags of member m's own (e.g. its certificate).
	MemberArgs func(m *Member) []string
	// Name names member i (--name); default "m<i>".
	Name func(i int) string
}

func (o ClusterOptions) peerScheme() string {
	if o.PeerScheme == "" {
		return "http"
	}
	return o.PeerScheme
}

// Member is one cluster member: a process, or an in-process embed member
// (InProc, Proc nil).
type Member struct {
	*Proc
	InProc    bool
	c         *Cluster
	Idx       int
	Name      string
	PeerURL   string
	ClientURL string // advertised (fixed) client URL
	Host      *NSHost
	ID        uint64 // raft member id, learnt from Status
}

// Cluster is a set of member processes.
type Cluster struct {
	t       testing.TB
	Bin     string
	Opts    ClusterOptions
	Members []*Member
	dir     string
}

func (c *Cluster) kind() string {
	if c.Bin == "" {
		return "meshetcd in-process"
	}
	if c.Bin == bins.etcd {
		return "etcd"
	}
	return "meshetcd"
}

// newMember allocates URLs for member i (not started).
func (c *Cluster) newMember(i int) *Member {
	m := &Member{c: c, Idx: i, Name: fmt.Sprintf("m%d", i)}
	if c.Opts.Name != nil {
		m.Name = c.Opts.Name(i)
	}
	if c.Opts.Lab != nil {
		m.Host = c.Opts.Lab.Hosts[i]
		m.PeerURL = fmt.Sprintf("%s://%s:30380", c.Opts.peerScheme(), m.Host.IP)
		m.ClientURL = fmt.Sprintf("http://%s:30379", m.Host.IP)
	} else {
		m.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", c.Opts.peerScheme(), testutil.FreePort(c.t))
		m.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(c.t))
	}
	return m
}

// memberArgs are the etcd-style flags for m. initialCluster and state are
// the --initial-cluster and --initial-cluster-state values.
func (c *Cluster) memberArgs(m *Member, initialCluster, state string) []string {
	args := []string{
		"--name", m.Name,
		"--data-dir", filepath.Join(c.dir, m.Name+".data"),
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster-token", c.Opts.Token,
	}
	if initialCluster != "" {
		args = append(args, "--initial-cluster", initialCluster, "--initial-cluster-state", state)
	}
	args = append(args, c.Opts.Args...)
	if c.Opts.MemberArgs != nil {
		args = append(args, c.Opts.MemberArgs(m)...)
	}
	return args
}

// procFor builds (does not start) the process for m with the given flags.
func (c *Cluster) procFor(m *Member, args []string) *Proc {
	bin := c.Bin
	if m.Host != nil {
		args = append([]string{"netns", "exec", m.Host.NS, bin}, args...)
		bin = "ip"
	}
	var env []string // without the test's own MESHETCD_* settings (meshetcd reads MESHETCD_*)
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "MESHETCD_") {
			env = append(env, kv)
		}
	}
	return &Proc{t: c.t, bin: bin, args: args, env: env, dir: c.dir, DataDir: filepath.Join(c.dir, m.Name+".data")}
}

// StartCluster starts a statically bootstrapped cluster and waits until
// every member is ready and there is a leader.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Bin == "" {
		o.Bin = bins.meshetcd
	}
	if o.Size == 0 {
		o.Size = 3
	}
	if o.Token == "" {
		o.Token = "mtest-" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
		if len(o.Token) > 60 {
			o.Token = o.Token[:60]
		}
	}
	c := &Cluster{t: t, Bin: o.Bin, Opts: o, dir: t.TempDir()}
	var ic []string
	for i := 0; i < o.Size; i++ {
		m := c.newMember(i)
		c.Members = append(c.Members, m)
		ic = append(ic, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.Proc = c.procFor(m, c.memberArgs(m, strings.Join(ic, ","), "new"))
		m.Proc.start()
	}
	if !o.NoWait {
		c.WaitReady()
		c.WaitLeader(t)
	}
	return c
}

// running reports whether the member is up (in-process members always are).
func (m *Member) running() bool {
	if m.InProc {
		return true
	}
	return m.Proc != nil && !m.Exited()
}

// WaitReady waits for the ready line of every running member.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	for _, m := range c.Members {
		if !m.InProc && m.running() {
			m.waitReady()
		}
	}
}

// waitReady waits for the ready line and then uses the fixed client URL
// (etcd may log "serving client traffic" before the ready line or not name
// the address the same way inside a namespace).
func (m *Member) waitReady() {
	m.c.t.Helper()
	m.Proc.WaitReady()
	m.Endpoint = strings.TrimPrefix(m.ClientURL, "http://")
	m.Proc.ClientURL = m.ClientURL
}

// Endpoints returns the client endpoints (host:port) of the given members
// (all when none given).
func (c *Cluster) Endpoints(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.Members {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, strings.TrimPrefix(c.Members[i].ClientURL, "http://"))
	}
	return eps
}

// Client returns a client for the given members (all when none given),
// closed at test end. Inside a NetLab, a client bound to several members
// dials each through its own namespace.
func (c *Cluster) Client(t testing.TB, idx ...int) *clientv3.Client {
	t.Helper()
	return c.clientCfg(t, clientv3.Config{}, idx...)
}

func (c *Cluster) clientCfg(t testing.TB, cfg clientv3.Config, idx ...int) *clientv3.Client {
	t.Helper()
	cfg.Endpoints = c.Endpoints(idx...)
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	cfg.Logger = zap.NewNop()
	if c.Opts.Lab != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(c.Opts.Lab.dialByIP))
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("clientv3.New(%v): %v", cfg.Endpoints, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Status asks member i for its status (ID, leader, term) with a short
// timeout, through a client bound to that member alone.
func (c *Cluster) Status(ctx context.Context, cli *clientv3.Client, i int) (*clientv3.StatusResponse, error) {
	st, err := cli.Status(ctx, c.Endpoints(i)[0])
	if err == nil && st.Header != nil {
		c.Members[i].ID = st.Header.MemberId
	}
	return st, err
}

// statusClients caches one client per member for status polling.
type statusClients struct {
	mu   sync.Mutex
	clis map[int]*clientv3.Client
}

var statusCache sync.Map // *Cluster -> *statusClients

func (c *Cluster) statusClient(i int) *clientv3.Client {
	v, _ := statusCache.LoadOrStore(c, &statusClients{clis: map[int]*clientv3.Client{}})
	sc := v.(*statusClients)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if cli := sc.clis[i]; cli != nil {
		return cli
	}
	cli := c.clientCfg(c.t, clientv3.Config{DialTimeout: 2 * time.Second}, i)
	sc.clis[i] = cli
	return cli
}

// Leader returns the index of the member that the running members agree
// on as leader (a majority of the cluster reports it), or -1.
func (c *Cluster) Leader() int {
	votes := map[uint64]int{}
	for i, m := range c.Members {
		if !m.running() {
			continue
		}
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(cctx, c.statusClient(i), i)
		cancel()
		if err == nil && st.Leader != 0 {
			votes[st.Leader]++
		}
	}
	for id, n := range votes {
		if n > len(c.Members)/2 {
			for i, m := range c.Members {
				if m.ID == id {
					return i
				}
			}
		}
	}
	return -1
}

// WaitLeader waits until a majority agrees on a running leader.
func (c *Cluster) WaitLeader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if l := c.Leader(); l >= 0 && c.Members[l].running() {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s cluster: no leader within %v", c.kind(), readyTimeout)
	return -1
}

// WaitHealthy waits until every running member answers a linearizable
// read through itself and all agree on the leader.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		last = c.healthy()
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s cluster not healthy within %v: %v", c.kind(), readyTimeout, last)
}

func (c *Cluster) healthy() error {
	var leader uint64
	for i, m := range c.Members {
		if !m.running() {
			continue
		}
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, err := c.Status(cctx, c.statusClient(i), i)
		if err == nil {
			_, err = c.statusClient(i).Get(cctx, "health-probe")
		}
		cancel()
		if err != nil {
			return fmt.Errorf("member %s: %v", m.Name, err)
		}
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return fmt.Errorf("member %s reports leader %x (others %x)", m.Name, st.Leader, leader)
		}
		leader = st.Leader
	}
	return nil
}

// Kill SIGKILLs member i.
func (c *Cluster) Kill(i int) { c.Members[i].Kill() }

// Restart starts member i again on its data dir (same flags) and waits
// until it is ready.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.Members[i]
	if !m.Exited() {
		c.t.Fatalf("Restart(%s): still running", m.Name)
	}
	m.Proc.start()
	m.waitReady()
}

// Pause SIGSTOPs member i; Resume SIGCONTs it.
func (c *Cluster) Pause(i int)  { c.Members[i].Signal(syscall.SIGSTOP) }
func (c *Cluster) Resume(i int) { c.Members[i].Signal(syscall.SIGCONT) }

// Ctl runs etcdctl against the given members (inside member idx[0]'s
// namespace in a NetLab).
func (c *Cluster) Ctl(idx []int, args ...string) (string, string, error) {
	eps := strings.Join(c.Endpoints(idx...), ",")
	if c.Opts.Lab == nil {
		return runCtl(eps, "", args...)
	}
	ns := c.Members[idx[0]].Host.NS
	full := append([]string{"netns", "exec", ns, bins.etcdctl, "--endpoints=" + eps, "--dial-timeout=10s", "--command-timeout=30s"}, args...)
	return runCmd(ctlTimeout, "ip", full...)
}

// MustCtl is Ctl that fails the test on error.
func (c *Cluster) MustCtl(t testing.TB, idx []int, args ...string) string {
	t.Helper()
	out, errOut, err := c.Ctl(idx, args...)
	if err != nil {
		t.Fatalf("etcdctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// CtlRetry runs etcdctl and retries while a membership change is refused
// for now: strict reconfig checks answer "unhealthy cluster" until every
// member has been connected for a while (etcd: 5 s), and promote answers
// "not in sync" until the learner caught up.
func (c *Cluster) CtlRetry(t testing.TB, idx []int, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		o, errOut, err := c.Ctl(idx, args...)
		if err == nil {
			return o
		}
		transient := strings.Contains(errOut, "unhealthy cluster") || strings.Contains(errOut, "in sync")
		if !transient || time.Now().After(deadline) {
			t.Fatalf("etcdctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, o, errOut)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// AddMember runs the etcd flow: `etcdctl member add` (optionally
// --learner) through member via, then starts the new member with
// --initial-cluster-state existing. It returns the new member, ready.
func (c *Cluster) AddMember(t testing.TB, via int, learner bool) *Member {
	t.Helper()
	m := c.newMember(len(c.Members))
	args := []string{"member", "add", m.Name, "--peer-urls=" + m.PeerURL}
	if learner {
		args = append(args, "--learner")
	}
	out := c.CtlRetry(t, []int{via}, args...)
	// etcdctl prints ETCD_INITIAL_CLUSTER="..." for the new member.
	var ic string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "ETCD_INITIAL_CLUSTER="); ok {
			ic = strings.Trim(v, `"`)
		}
	}
	if ic == "" {
		t.Fatalf("member add printed no ETCD_INITIAL_CLUSTER:\n%s", out)
	}
	c.Members = append(c.Members, m)
	m.Proc = c.procFor(m, c.memberArgs(m, ic, "existing"))
	m.Proc.start()
	m.waitReady()
	return m
}

// StartExtra starts a further member process with arbitrary flags (plus
// name, data dir and URLs) without bootstrap flags, e.g. for --join.
func (c *Cluster) StartExtra(t testing.TB, host *NSHost, wait bool, args ...string) *Member {
	t.Helper()
	m := &Member{c: c, Idx: len(c.Members), Name: fmt.Sprintf("m%d", len(c.Members))}
	if host != nil {
		m.Host = host
		m.PeerURL = fmt.Sprintf("%s://%s:30380", c.Opts.peerScheme(), host.IP)
		m.ClientURL = fmt.Sprintf("http://%s:30379", host.IP)
	} else {
		m.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", c.Opts.peerScheme(), testutil.FreePort(t))
		m.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))
	}
	c.Members = append(c.Members, m)
	m.Proc = c.procFor(m, append(c.memberArgs(m, "", ""), args...))
	m.Proc.start()
	if wait {
		m.waitReady()
	}
	return m
}

// forEachClusterServer runs fn against meshetcd and, when bin/etcd exists,
// against etcd 3.7.3: the behaviours under test are meant to be the same.
func forEachClusterServer(t *testing.T, fn func(t *testing.T, bin string)) {
	t.Run("meshetcd", func(t *testing.T) { fn(t, bins.meshetcd) })
	if bins.etcd != "" {
		t.Run("etcd", func(t *testing.T) { fn(t, bins.etcd) })
	}
}

// isTimeout reports whether err is (or wraps) a deadline/cancel.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		strings.Contains(err.Error(), "DeadlineExceeded") || strings.Contains(err.Error(), "deadline exceeded")
}

func clientv3WithPrefix() []clientv3.OpOption { return []clientv3.OpOption{clientv3.WithPrefix()} }
