package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hostile link shapes for a NetLab, beyond the clean cut. This kernel has
// no netem, so:
//   - loss, one-way links and a bandwidth limit are nftables rules in the
//     sending namespace's output chain (table inet mtest, chain out):
//     "numgen random mod 100 < p drop", a plain drop for one direction,
//     "limit rate over N kbytes/second drop";
//   - flapping is a goroutine that cuts and heals the link every 1–3 s;
//   - delay with jitter is a userspace TCP relay: an nftables DNAT rule in
//     each end's namespace sends new connections to the other end's peer
//     port to a relay listening in that namespace, which forwards them from
//     the bridge namespace (address 10.213.0.250) and holds every chunk for
//     a random 50–300 ms, keeping the order.
//
// HealAll removes every shape as well as every cut.

// peerPort is the mesh port of a NetLab member (see Cluster.newMember).
const peerPort = 30380

// requireNft skips unless nft(8) is available; `make test-integration`
// installs it (integration/scripts/install-debian.sh), and the test runs
// that script itself when nft is missing.
func requireNft(t testing.TB) {
	t.Helper()
	requireNetns(t)
	if _, err := exec.LookPath("nft"); err == nil {
		return
	}
	root, err := repoRoot()
	if err == nil {
		_, _, err = runCmd(10*time.Minute, "sh", root+"/integration/scripts/install-debian.sh", "nft", "nftables", "the hostile-link tests in network namespaces")
	}
	if _, lerr := exec.LookPath("nft"); lerr != nil {
		t.Skipf("hostile link shapes need nftables (nft): %v", err)
	}
}

// linkShapes is the NetLab's state for the shapes.
type linkShapes struct {
	tables   map[int]bool // namespaces with the mtest table
	flaps    []func()     // stop functions of running flappers
	relays   []*delayRelay
	bridgeIP bool
}

func (l *NetLab) shapes() *linkShapes {
	if l.shape == nil {
		l.shape = &linkShapes{tables: map[int]bool{}}
	}
	return l.shape
}

func (l *NetLab) nft(host int, script string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.Hosts[host].NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft in %s: %v\n%s\n%s", l.Hosts[host].NS, err, script, out)
	}
}

// ensureTable creates host's mtest table (filter chain out, nat chain
// natout) once.
func (l *NetLab) ensureTable(host int) {
	s := l.shapes()
	if s.tables[host] {
		return
	}
	l.nft(host, `table inet mtest {
	chain out { type filter hook output priority 0; }
	chain natout { type nat hook output priority -100; }
}
`)
	s.tables[host] = true
}

// Loss drops pct % of the packets on the link a–b, both directions.
func (l *NetLab) Loss(a, b, pct int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range [][2]int{{a, b}, {b, a}} {
		l.ensureTable(p[0])
		l.nft(p[0], fmt.Sprintf("add rule inet mtest out ip daddr %s numgen random mod 100 < %d drop\n", l.Hosts[p[1]].IP, pct))
	}
}

// OneWay lets packets from → to through and drops every packet to → from.
func (l *NetLab) OneWay(from, to int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ensureTable(to)
	l.nft(to, fmt.Sprintf("add rule inet mtest out ip daddr %s drop\n", l.Hosts[from].IP))
}

// Slow limits the link a–b to kbps kilobytes per second each way (a
// policer: what exceeds the rate is dropped).
func (l *NetLab) Slow(a, b, kbps int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range [][2]int{{a, b}, {b, a}} {
		l.ensureTable(p[0])
		l.nft(p[0], fmt.Sprintf("add rule inet mtest out ip daddr %s limit rate over %d kbytes/second drop\n", l.Hosts[p[1]].IP, kbps))
	}
}

// Flap cuts and heals the link a–b every 1–3 s (random) until HealAll.
func (l *NetLab) Flap(a, b int, rng *rand.Rand) {
	stop := make(chan struct{})
	done := make(chan struct{})
	seed := rng.Int63()
	go func() {
		defer close(done)
		r := rand.New(rand.NewSource(seed))
		up := true
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second + time.Duration(r.Int63n(int64(2*time.Second)))):
			}
			if up {
				l.Cut(a, b)
			} else {
				l.Heal(a, b)
			}
			up = !up
		}
	}()
	l.mu.Lock()
	l.shapes().flaps = append(l.shapes().flaps, func() { close(stop); <-done })
	l.mu.Unlock()
}

// Delay puts a relay on the link a–b that holds every chunk for a random
// delay in [lo, hi], both directions. Connections open before the call are
// reset so that the new ones go through the relay.
func (l *NetLab) Delay(a, b int, lo, hi time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.shapes()
	if !s.bridgeIP {
		l.ip("-n", l.br, "addr", "add", "10.213.0.250/24", "dev", "br0")
		s.bridgeIP = true
	}
	for _, p := range [][2]int{{a, b}, {b, a}} {
		from, to := l.Hosts[p[0]], l.Hosts[p[1]]
		ln, err := listenInNetns(from.NS, fmt.Sprintf("%s:%d", from.IP, 31000+to.Idx))
		if err != nil {
			l.t.Fatalf("relay listener in %s: %v", from.NS, err)
		}
		r := newDelayRelay(ln, l.br, fmt.Sprintf("%s:%d", to.IP, peerPort), lo, hi)
		s.relays = append(s.relays, r)
		l.ensureTable(p[0])
		l.nft(p[0], fmt.Sprintf("add rule inet mtest natout ip daddr %s tcp dport %d dnat ip to %s:%d\n", to.IP, peerPort, from.IP, 31000+to.Idx))
		// Reset the direct connections: DNAT applies to new ones only.
		_, _, _ = runCmd(10*time.Second, "ip", "netns", "exec", from.NS, "ss", "-K", "dst", to.IP)
	}
}

// clearShapes stops flappers and relays and removes every nft rule. Called
// by HealAll without l.mu held.
func (l *NetLab) clearShapes() {
	l.mu.Lock()
	s := l.shape
	l.shape = nil
	l.mu.Unlock()
	if s == nil {
		return
	}
	for _, stop := range s.flaps {
		stop()
	}
	for h := range s.tables {
		_, _, _ = runCmd(10*time.Second, "ip", "netns", "exec", l.Hosts[h].NS, "nft", "delete", "table", "inet", "mtest")
	}
	for _, r := range s.relays {
		r.Close()
	}
	if s.bridgeIP {
		_, _, _ = runCmd(10*time.Second, "ip", "-n", l.br, "addr", "del", "10.213.0.250/24", "dev", "br0")
	}
}

// listenInNetns opens a TCP listener inside namespace ns (the socket stays
// there after the thread switches back), like dialInNetns.
func listenInNetns(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(ns, func() (io.Closer, error) {
		var err error
		ln, err = net.Listen("tcp", addr)
		return ln, err
	})
	return ln, err
}

// delayRelay accepts connections on ln and forwards each to upstream
// (dialled from namespace dialNS), holding every chunk for a random delay
// in [lo, hi] without reordering. Close stops it and every connection.
type delayRelay struct {
	ln       net.Listener
	dialNS   string
	upstream string
	lo, hi   time.Duration
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func newDelayRelay(ln net.Listener, dialNS, upstream string, lo, hi time.Duration) *delayRelay {
	ctx, cancel := context.WithCancel(context.Background())
	r := &delayRelay{ln: ln, dialNS: dialNS, upstream: upstream, lo: lo, hi: hi, ctx: ctx, cancel: cancel}
	r.wg.Add(1)
	go r.accept()
	return r
}

func (r *delayRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relay(c)
		}()
	}
}

func (r *delayRelay) relay(down net.Conn) {
	defer down.Close()
	dctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	up, err := dialInNetns(dctx, r.dialNS, r.upstream)
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { r.pipe(up, down); done <- struct{}{} }()
	go func() { r.pipe(down, up); done <- struct{}{} }()
	pending := 2
	select {
	case <-done:
		pending--
	case <-r.ctx.Done():
	}
	_ = down.Close()
	_ = up.Close()
	for ; pending > 0; pending-- {
		<-done // a direction ends once both connections are closed
	}
}

// pipe copies src to dst, each chunk delivered no earlier than its
// arrival plus a random delay and never before the chunk ahead of it.
func (r *delayRelay) pipe(dst, src net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		rng := rand.New(rand.NewSource(time.Now().UnixNano()))
		var last time.Time
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				due := time.Now().Add(r.lo + time.Duration(rng.Int63n(int64(r.hi-r.lo)+1)))
				if due.Before(last) {
					due = last
				}
				last = due
				q <- chunk{b[:n], due}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			_ = src.Close()
			for range q { // let the reader finish
			}
			return
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, src)
}

// Close stops accepting and ends every relayed connection.
func (r *delayRelay) Close() {
	r.cancel()
	_ = r.ln.Close()
	r.wg.Wait()
}
