package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetLab is a set of network namespaces (mtest-<id>-<i>), each with one
// interface on a shared bridge that lives in its own namespace
// (mtest-<id>-br). Addresses are 10.213.0.<10+i>/24 and exist only inside
// these namespaces; nothing is added to the root namespace. A link between
// two members is cut with a blackhole route on both sides.
//
// The test process (root namespace) reaches a member's client port through
// a dialer that creates the socket inside the member's namespace (setns on a
// locked OS thread).
type NetLab struct {
	t     testing.TB
	id    string
	br    string
	Hosts []*NSHost
	mu    sync.Mutex
	cuts  map[[2]int]bool
	shape *linkShapes // loss, one-way, slow, flapping, delay (netns_shapes_test.go)
}

// NSHost is one namespace.
type NSHost struct {
	Idx int
	NS  string
	IP  string
}

var labSeq atomic.Int32

// requireNetns skips the test unless root and ip(8) are available.
func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network-namespace tests need root (ip netns); skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network-namespace tests need the ip command (iproute2); skipping")
	}
}

func runCmd(timeout time.Duration, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func (l *NetLab) ip(args ...string) {
	l.t.Helper()
	if out, errOut, err := runCmd(30*time.Second, "ip", args...); err != nil {
		l.t.Fatalf("ip %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
}

// NewNetLab creates n namespaces on one bridge; all are removed at test end
// (after the processes in them have been killed: cleanups run in reverse).
func NewNetLab(t testing.TB, n int) *NetLab {
	t.Helper()
	requireNetns(t)
	id := fmt.Sprintf("%d%d", os.Getpid()%1000, labSeq.Add(1))
	l := &NetLab{t: t, id: id, br: "mtest-" + id + "-br", cuts: map[[2]int]bool{}}
	t.Cleanup(l.destroy)
	l.ip("netns", "add", l.br)
	l.ip("-n", l.br, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.br, "link", "set", "br0", "up")
	for i := 0; i < n; i++ {
		h := &NSHost{Idx: i, NS: fmt.Sprintf("mtest-%s-%d", id, i), IP: fmt.Sprintf("10.213.0.%d", 10+i)}
		l.Hosts = append(l.Hosts, h)
		l.ip("netns", "add", h.NS)
		peer := fmt.Sprintf("v%d", i)
		l.ip("-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", l.br)
		l.ip("-n", l.br, "link", "set", peer, "master", "br0", "up")
		l.ip("-n", h.NS, "addr", "add", h.IP+"/24", "dev", "eth0")
		l.ip("-n", h.NS, "link", "set", "eth0", "up")
		l.ip("-n", h.NS, "link", "set", "lo", "up")
	}
	return l
}

func (l *NetLab) destroy() {
	l.clearShapes()
	for _, h := range l.Hosts {
		_, _, _ = runCmd(30*time.Second, "ip", "netns", "del", h.NS)
	}
	_, _, _ = runCmd(30*time.Second, "ip", "netns", "del", l.br)
}

// Cut blackholes the link between hosts a and b (both directions).
func (l *NetLab) Cut(a, b int) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [2]int{min(a, b), max(a, b)}
	if l.cuts[k] {
		return
	}
	l.ip("-n", l.Hosts[a].NS, "route", "add", "blackhole", l.Hosts[b].IP+"/32")
	l.ip("-n", l.Hosts[b].NS, "route", "add", "blackhole", l.Hosts[a].IP+"/32")
	l.cuts[k] = true
}

// Heal removes a Cut.
func (l *NetLab) Heal(a, b int) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [2]int{min(a, b), max(a, b)}
	if !l.cuts[k] {
		return
	}
	l.ip("-n", l.Hosts[a].NS, "route", "del", "blackhole", l.Hosts[b].IP+"/32")
	l.ip("-n", l.Hosts[b].NS, "route", "del", "blackhole", l.Hosts[a].IP+"/32")
	delete(l.cuts, k)
}

// HealAll removes every cut and every link shape.
func (l *NetLab) HealAll() {
	l.clearShapes()
	l.mu.Lock()
	var ks [][2]int
	for k := range l.cuts {
		ks = append(ks, k)
	}
	l.mu.Unlock()
	for _, k := range ks {
		l.Heal(k[0], k[1])
	}
}

// Isolate cuts every link between the hosts in group and the others.
func (l *NetLab) Isolate(group ...int) {
	in := map[int]bool{}
	for _, g := range group {
		in[g] = true
	}
	for a := range l.Hosts {
		for b := range l.Hosts {
			if a < b && in[a] != in[b] {
				l.Cut(a, b)
			}
		}
	}
}

// hostByIP finds the namespace that owns ip.
func (l *NetLab) hostByIP(ip string) *NSHost {
	for _, h := range l.Hosts {
		if h.IP == ip {
			return h
		}
	}
	return nil
}

// dialByIP dials addr (ip:port of a member) from inside that member's own
// namespace, so the root namespace needs no address or route.
func (l *NetLab) dialByIP(ctx context.Context, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	h := l.hostByIP(host)
	if h == nil {
		return nil, fmt.Errorf("netlab: %s is not in this lab", addr)
	}
	return dialInNetns(ctx, h.NS, addr)
}

// dialInNetns creates a TCP connection from inside namespace ns. The
// socket stays in that namespace after the thread switches back.
func dialInNetns(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() (io.Closer, error) {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return c, err
	})
	return c, err
}

// inNetns runs open on a thread switched into namespace ns and switches the
// thread back; sockets open creates stay in ns. If the switch back fails,
// what open made is closed and the thread stays locked, so Go discards it
// with its goroutine and no other goroutine runs in the wrong namespace.
func inNetns(ns string, open func() (io.Closer, error)) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer target.Close()
		if err := setns(target.Fd()); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		made, oerr := open()
		if err := setns(orig.Fd()); err != nil {
			if oerr == nil {
				_ = made.Close()
			}
			ch <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		ch <- oerr
	}()
	return <-ch
}

func setns(fd uintptr) error { return unix.Setns(int(fd), unix.CLONE_NEWNET) }
