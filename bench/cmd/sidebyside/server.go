package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// system is one server implementation under test: the baseline (etcd) or the candidate.
type system struct {
	name  string // label in tables and file names
	bin   string // the private copy that runs
	orig  string // the binary it was copied from
	sha   string
	index int // 0 = baseline, 1 = candidate; selects the port block
}

// member is one server process.
type member struct {
	name       string
	clientPort int
	peerPort   int
	scheme     string // of the client URL: http, or https in a --tls run
	cmd        *exec.Cmd
	logPath    string
	exited     chan struct{}
	exitErr    error
}

func (m *member) clientURL() string { return fmt.Sprintf("%s://127.0.0.1:%d", m.scheme, m.clientPort) }
func (m *member) peerURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", m.peerPort) }
func (m *member) endpoint() string  { return fmt.Sprintf("127.0.0.1:%d", m.clientPort) }
func (m *member) pid() int          { return m.cmd.Process.Pid }

func (m *member) running() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// cluster is a fresh set of members of one system, with its own data directory.
type cluster struct {
	sys     *system
	members []*member
	dataDir string
	started time.Time
	ready   time.Duration
	tls     *tlsFiles // nil: plaintext clients
}

// portsFor is the port scheme, identical for every system: system block s starts at
// base + s*blockSize; member i listens for clients on block+2i and for peers on block+2i+1.
func portsFor(base, sysIndex, memberIndex int) (client, peer int) {
	block := base + sysIndex*blockSize
	return block + 2*memberIndex, block + 2*memberIndex + 1
}

const blockSize = 20 // room for 10 members per system

// pickPortBase returns the first base >= from (stepping by 2 blocks, staying below
// maxPort) at which every port both systems need is free on loopback.
func pickPortBase(from, members int) (int, error) {
	for base := from; base+2*blockSize <= maxPort+1; base += 2 * blockSize {
		if portsFree(base, members) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free port block in %d-%d for %d members", from, maxPort, members)
}

const maxPort = 27999

func portsFree(base, members int) bool {
	for s := 0; s < 2; s++ {
		for i := 0; i < members; i++ {
			c, p := portsFor(base, s, i)
			for _, port := range []int{c, p} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					return false
				}
				l.Close()
			}
		}
	}
	return true
}

// startCluster starts n members of sys with etcd's static-bootstrap flags, identical
// for every system. extra is appended to every member's command line. With tls,
// client URLs are https:// and every member gets the same certificate flags.
func startCluster(sys *system, n, portBase int, dataRoot, logDir, tag string, extra []string, tls *tlsFiles) (*cluster, error) {
	c := &cluster{sys: sys, dataDir: filepath.Join(dataRoot, tag+"-"+sys.name), started: time.Now(), tls: tls}
	extra = append(tls.serverArgs(), extra...)
	if err := os.RemoveAll(c.dataDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.dataDir, 0o755); err != nil {
		return nil, err
	}
	var initial []string
	for i := 0; i < n; i++ {
		cp, pp := portsFor(portBase, sys.index, i)
		m := &member{name: fmt.Sprintf("m%d", i), clientPort: cp, peerPort: pp, scheme: tls.scheme(), exited: make(chan struct{})}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL())
	}
	token := fmt.Sprintf("bench-%s-%s-%d", sys.name, tag, time.Now().UnixNano())
	for _, m := range c.members {
		args := []string{
			"--name", m.name,
			"--data-dir", filepath.Join(c.dataDir, m.name),
			"--listen-client-urls", m.clientURL(),
			"--advertise-client-urls", m.clientURL(),
			"--listen-peer-urls", m.peerURL(),
			"--initial-advertise-peer-urls", m.peerURL(),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
		}
		args = append(args, extra...)
		m.logPath = filepath.Join(logDir, fmt.Sprintf("%s-%s-%s.log", tag, sys.name, m.name))
		logf, err := os.Create(m.logPath)
		if err != nil {
			c.stop()
			return nil, err
		}
		fmt.Fprintf(logf, "# %s %s\n", sys.bin, strings.Join(args, " "))
		m.cmd = exec.Command(sys.bin, args...)
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		// A server must not outlive the driver, even if the driver is killed.
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := m.cmd.Start(); err != nil {
			logf.Close()
			c.stop()
			return nil, fmt.Errorf("start %s %s: %w", sys.name, m.name, err)
		}
		go func(m *member, logf *os.File) {
			m.exitErr = m.cmd.Wait()
			logf.Close()
			close(m.exited)
		}(m, logf)
	}
	return c, nil
}

func newClient(eps []string, t *tlsFiles) (*clientv3.Client, error) {
	tc, err := t.clientConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         tc,
	})
}

// waitReady waits until every member answers Status with the same non-zero leader and
// lists all members, then writes the key the range workloads read.
func (c *cluster) waitReady(ctx context.Context, timeout time.Duration, seedKey, seedVal string) error {
	deadline := time.Now().Add(timeout)
	var last error
	cli, err := newClient(c.endpoints(), c.tls)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		if err := c.checkAlive(); err != nil {
			return err
		}
		last = c.formed(ctx, cli)
		if last == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d-member cluster not ready after %v: %w", c.sys.name, len(c.members), timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cli.Put(pctx, seedKey, seedVal)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: seed put: %w", c.sys.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.ready = time.Since(c.started)
	return nil
}

func (c *cluster) formed(ctx context.Context, cli *clientv3.Client) error {
	var leader uint64
	for _, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, m.endpoint())
		cancel()
		if err != nil {
			return fmt.Errorf("status %s: %w", m.name, err)
		}
		if st.Leader == 0 {
			return fmt.Errorf("%s has no leader", m.name)
		}
		if leader != 0 && st.Leader != leader {
			return fmt.Errorf("members disagree on the leader (%x vs %x)", leader, st.Leader)
		}
		leader = st.Leader
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ml, err := cli.MemberList(lctx)
	if err != nil {
		return fmt.Errorf("member list: %w", err)
	}
	if len(ml.Members) != len(c.members) {
		return fmt.Errorf("member list has %d members, want %d", len(ml.Members), len(c.members))
	}
	return nil
}

// leader returns the member that is the Raft leader now (the first member if that
// cannot be told).
func (c *cluster) leader(ctx context.Context) *member {
	cli, err := newClient(c.endpoints(), c.tls)
	if err != nil {
		return c.members[0]
	}
	defer cli.Close()
	for _, m := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, m.endpoint())
		cancel()
		if err == nil && st.Header != nil && st.Leader != 0 && st.Header.MemberId == st.Leader {
			return m
		}
	}
	return c.members[0]
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.endpoint())
	}
	return eps
}

// checkAlive reports the first member that has exited, with the tail of its log.
func (c *cluster) checkAlive() error {
	for _, m := range c.members {
		if !m.running() {
			return fmt.Errorf("%s %s exited (%v); end of %s:\n%s", c.sys.name, m.name, m.exitErr, m.logPath, tailFile(m.logPath, 3))
		}
	}
	return nil
}

// stop terminates every member (SIGTERM, then SIGKILL after 3s: the data is thrown away) and removes the data dir.
func (c *cluster) stop() {
	for _, m := range c.members {
		if m.cmd != nil && m.cmd.Process != nil && m.running() {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, m := range c.members {
		if m.cmd == nil || m.cmd.Process == nil {
			continue
		}
		select {
		case <-m.exited:
		case <-time.After(3 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	}
}

// procStat is what /proc says about one process.
type procStat struct {
	cpu   float64 // utime+stime, seconds
	hwmKB int64   // VmHWM: peak resident set size
	rssKB int64
}

// clkTck is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; the kernel exports
// 100 on every architecture Go supports on Linux.
const clkTck = 100

func readProcStat(pid int) (procStat, error) {
	var ps procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ps, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return ps, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return ps, errors.New("bad utime/stime")
	}
	ps.cpu = (ut + st) / clkTck
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmHWM", "VmRSS":
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if k == "VmHWM" {
				ps.hwmKB = n
			} else {
				ps.rssKB = n
			}
		}
	}
	return ps, nil
}

// usage sums CPU seconds over the members and takes the largest VmHWM.
func (c *cluster) usage() (cpu float64, hwmKB int64, err error) {
	for _, m := range c.members {
		ps, e := readProcStat(m.pid())
		if e != nil {
			return 0, 0, fmt.Errorf("%s %s: %w", c.sys.name, m.name, e)
		}
		cpu += ps.cpu
		hwmKB = max(hwmKB, ps.hwmKB)
	}
	return cpu, hwmKB, nil
}

// restingRSS is the largest member's VmRSS now.
func (c *cluster) restingRSS() (int64, error) {
	var rss int64
	for _, m := range c.members {
		ps, err := readProcStat(m.pid())
		if err != nil {
			return 0, fmt.Errorf("%s %s: %w", c.sys.name, m.name, err)
		}
		rss = max(rss, ps.rssKB)
	}
	return rss, nil
}

// perMember describes each member's lifetime CPU and current VmHWM, e.g.
// "m0 cpu=3.10s hwm=61MiB; m1 ...".
func (c *cluster) perMember() string {
	var parts []string
	for _, m := range c.members {
		ps, err := readProcStat(m.pid())
		if err != nil {
			parts = append(parts, m.name+" "+err.Error())
			continue
		}
		parts = append(parts, fmt.Sprintf("%s cpu=%.2fs hwm=%.0fMiB", m.name, ps.cpu, float64(ps.hwmKB)/1024))
	}
	return strings.Join(parts, "; ")
}

// resetPeakRSS resets every member's VmHWM to its current RSS (Linux >= 4.0), so the
// next reading is the peak during one workload. It reports whether that worked.
func (c *cluster) resetPeakRSS() bool {
	ok := true
	for _, m := range c.members {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", m.pid()), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, "# ") { // our own header: the command line
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
