package integration

import (
	"net/url"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meshetcd/meshetcd/embed"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Timeouts are generous: the suite must not flake on a loaded 2-core box.
const (
	readyTimeout = 90 * time.Second
	exitTimeout  = 60 * time.Second
	ctlTimeout   = 60 * time.Second
	reqTimeout   = 30 * time.Second
)

// readyLine is etcd's exact log message once a member serves clients.
const readyLine = "ready to serve client requests"

// bins are the binaries under test. They are set once, in TestMain, before
// any test runs, and never change afterwards.
var bins struct {
	meshetcd string
	etcdctl  string
	etcdutl  string // etcd's etcdutl 3.7.3 (ETCDUTL_BIN, or built from tools/etcdutl)
	etcd     string // optional: etcd 3.7.3 for differential tests
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "meshetcd-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	// Private copies: other people rebuild bin/ while tests run.
	var err2 error
	if bins.meshetcd, err2 = binary(tmp, "MESHETCD_BIN", "meshetcd", root, "./cmd/meshetcd"); err2 != nil {
		fmt.Fprintln(os.Stderr, "integration:", err2)
		return 1
	}
	if bins.etcdctl, err2 = binary(tmp, "ETCDCTL_BIN", "etcdctl", filepath.Join(root, "tools", "etcdctl"), "."); err2 != nil {
		fmt.Fprintln(os.Stderr, "integration:", err2)
		return 1
	}
	if bins.etcdutl, err2 = binary(tmp, "ETCDUTL_BIN", "etcdutl", filepath.Join(root, "tools", "etcdutl"), "."); err2 != nil {
		fmt.Fprintln(os.Stderr, "integration:", err2)
		return 1
	}
	etcdBin := os.Getenv("MESHETCD_DIFF_ETCD_BIN")
	if etcdBin == "" {
		etcdBin = filepath.Join(root, "bin", "etcd")
	}
	if fileExists(etcdBin) {
		if bins.etcd, err2 = copyBinary(etcdBin, filepath.Join(tmp, "etcd")); err2 != nil {
			fmt.Fprintln(os.Stderr, "integration:", err2)
			return 1
		}
	}
	return m.Run()
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) && fileExists(filepath.Join(d, "cmd", "meshetcd")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("repository root not found above %s", wd)
		}
	}
}

// binary returns a private copy of $envVar, or builds pkg (in dir) when
// the variable is unset.
func binary(tmp, envVar, name, dir, pkg string) (string, error) {
	out := filepath.Join(tmp, name)
	if src := os.Getenv(envVar); src != "" {
		return copyBinary(src, out)
	}
	if err := goBuild(dir, pkg, out); err != nil {
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	return out, nil
}

func copyBinary(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copying %s: %w", src, err)
	}
	return dst, nil
}

func goBuild(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cleanEnv is the parent's environment without ETCD_*/ETCDCTL_* variables,
// so a developer's shell cannot change what the tests see.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// logBuffer collects a child's output and lets tests wait for lines.
type logBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wake  chan struct{} // closed and replaced on every write
	extra io.Writer
}

func newLogBuffer() *logBuffer { return &logBuffer{wake: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.wake)
	b.wake = make(chan struct{})
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.wake
}

// logEntry is one zap JSON log line.
type logEntry map[string]any

func (e logEntry) msg() string { s, _ := e["msg"].(string); return s }

// entries parses the JSON log lines in the buffer (other lines are skipped).
func (b *logBuffer) entries() []logEntry {
	var out []logEntry
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// Proc is a meshetcd (or etcd) child process. It is always killed at the
// end of the test that started it.
type Proc struct {
	t       testing.TB
	bin     string
	args    []string
	env     []string
	dir     string
	DataDir string
	Logs    *logBuffer

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error

	// Endpoint is host:port of the first client listener; ClientURL the same
	// as a URL. Set once the member is ready.
	Endpoint  string
	ClientURL string
	// CtlArgs are extra etcdctl flags for every Ctl call (e.g. --cacert,
	// --cert, --key for a TLS member).
	CtlArgs []string
}

// ProcOptions configures StartProc. Zero values are fine.
type ProcOptions struct {
	Bin     string   // default: the meshetcd binary under test
	Name    string   // --name; default "m1"
	DataDir string   // default: a fresh temp dir
	Args    []string // extra flags
	Env     []string // extra environment ("K=V")
	// NoDefaults passes only Args (no --name/--data-dir/URL flags).
	NoDefaults bool
	// NoWait returns without waiting for the ready line.
	NoWait bool
	// Dir is the working directory; default a fresh temp dir, so a stray
	// default.meshetcd never lands in the repository.
	Dir string
}

// StartProc starts a member process on free ports with its own data dir and
// waits until it logs that it is ready to serve client requests.
func StartProc(t testing.TB, o ProcOptions) *Proc {
	t.Helper()
	if o.Bin == "" {
		o.Bin = bins.meshetcd
	}
	if o.Name == "" {
		o.Name = "m1"
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), o.Name+".data")
	}
	args := o.Args
	if !o.NoDefaults {
		// Port 0 everywhere: the child binds a free port itself and logs
		// it, so there is no race with other tests for a port number.
		args = append([]string{
			"--name", o.Name,
			"--data-dir", o.DataDir,
			"--listen-client-urls", "http://127.0.0.1:0",
			"--advertise-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", "http://127.0.0.1:0",
			"--initial-advertise-peer-urls", "http://127.0.0.1:0",
		}, args...)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	p := &Proc{t: t, bin: o.Bin, args: args, env: cleanEnv(o.Env...), dir: o.Dir, DataDir: o.DataDir}
	p.start()
	if !o.NoWait {
		p.WaitReady()
	}
	return p
}

func (p *Proc) start() {
	p.t.Helper()
	p.Logs = newLogBuffer()
	p.done = make(chan struct{})
	p.exitErr = nil
	p.Endpoint, p.ClientURL = "", ""
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout = p.Logs
	cmd.Stderr = p.Logs
	// Own process group, so a kill reaches anything the child might spawn.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.bin, err)
	}
	p.cmd = cmd
	done := p.done
	go func() {
		err := cmd.Wait()
		p.exitErr = err
		close(done)
	}()
	p.t.Cleanup(func() {
		p.Kill()
		if p.t.Failed() {
			p.t.Logf("output of %s %s:\n%s", filepath.Base(p.bin), strings.Join(p.args, " "), tail(p.Logs.String(), 150))
		}
	})
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// WaitReady waits for the ready line and for the "serving client traffic"
// line that names the bound client address (etcd logs them in either
// order), and records the endpoint.
func (p *Proc) WaitReady() {
	p.t.Helper()
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	for {
		s, wake := p.Logs.snapshot()
		if strings.Contains(s, readyLine) {
			if addr, scheme := p.clientAddress(); addr != "" {
				p.Endpoint = addr
				p.ClientURL = scheme + "://" + addr
				return
			}
		}
		select {
		case <-wake:
		case <-p.done:
			// Re-check once: the last lines may have arrived with the exit.
			if s2, _ := p.Logs.snapshot(); s2 == s {
				p.t.Fatalf("%s exited before it was ready (%v):\n%s", filepath.Base(p.bin), p.exitErr, tail(s2, 60))
			}
		case <-deadline.C:
			p.t.Fatalf("%s not ready after %v:\n%s", filepath.Base(p.bin), readyTimeout, tail(p.Logs.String(), 60))
		}
	}
}

// clientAddress is the address and scheme of the first client listener the
// process logged (etcd's "serving client traffic insecurely" or
// "... securely" lines).
func (p *Proc) clientAddress() (addr, scheme string) {
	for _, e := range p.Logs.entries() {
		scheme := "http"
		switch {
		case strings.HasPrefix(e.msg(), "serving client traffic insecurely"):
		case strings.HasPrefix(e.msg(), "serving client traffic securely"):
			scheme = "https"
		default:
			continue
		}
		if a, ok := e["address"].(string); ok {
			return a, scheme
		}
	}
	return "", ""
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if p.Exited() {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits for the process to exit and returns its exit code (-1 if it
// was killed by a signal).
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v:\n%s", filepath.Base(p.bin), timeout, tail(p.Logs.String(), 40))
	}
	return p.cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM and returns the exit code.
func (p *Proc) Stop() int {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	return p.Wait(exitTimeout)
}

// Kill SIGKILLs the process group and waits for the exit. Safe to repeat.
func (p *Proc) Kill() {
	if p.cmd == nil || p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.t.Errorf("process %d survived SIGKILL", p.cmd.Process.Pid)
	}
}

// Restart starts the same command again (same data dir and flags) after
// the previous process has exited, and waits until it is ready.
func (p *Proc) Restart() {
	p.t.Helper()
	if !p.Exited() {
		p.t.Fatalf("Restart: the previous process is still running")
	}
	p.start()
	p.WaitReady()
}

// Client returns a clientv3 client for the process, closed at test end.
func (p *Proc) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, p.Endpoint)
}

func newClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("clientv3.New(%v): %v", endpoints, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Ctl runs etcdctl against the process and returns stdout, stderr and the
// error (an *exec.ExitError for a non-zero exit).
func (p *Proc) Ctl(args ...string) (string, string, error) {
	return runCtl(p.Endpoint, "", append(slices.Clone(p.CtlArgs), args...)...)
}

// CtlIn is Ctl with stdin.
func (p *Proc) CtlIn(stdin string, args ...string) (string, string, error) {
	return runCtl(p.Endpoint, stdin, append(slices.Clone(p.CtlArgs), args...)...)
}

// MustCtl runs etcdctl and fails the test on a non-zero exit.
func (p *Proc) MustCtl(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := p.Ctl(args...)
	if err != nil {
		t.Fatalf("etcdctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func runCtl(endpoint, stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	full := append([]string{"--endpoints=" + endpoint, "--dial-timeout=10s", "--command-timeout=30s"}, args...)
	cmd := exec.CommandContext(ctx, bins.etcdctl, full...)
	cmd.Env = cleanEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// RunOnce runs the binary with args to completion (for flag errors,
// --version, --help) and returns its exit code and combined output.
func RunOnce(t testing.TB, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = t.TempDir() // never create default.meshetcd in the repo
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		t.Fatalf("running %s %v: %v\n%s", bin, args, err, out)
		return -1, ""
	}
}

// ctx returns a request context bounded by reqTimeout.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), reqTimeout)
	t.Cleanup(cancel)
	return c
}

// testLogger logs through t, for in-process members: warnings and errors;
// MESHETCD_TEST_LOG=debug|info|warn|error sets another level when a
// failure needs the members' story.
func testLogger(t testing.TB) *zap.Logger {
	level := zap.WarnLevel
	if v := os.Getenv("MESHETCD_TEST_LOG"); v != "" {
		if err := level.Set(v); err != nil {
			t.Fatalf("MESHETCD_TEST_LOG=%q: %v", v, err)
		}
	}
	return zaptest.NewLogger(t, zaptest.Level(level))
}

// StartEmbedded starts an in-process member through embed on free ports,
// closed at test end. The returned Proc carries the endpoint, so Client,
// Ctl and MustCtl work on it as on a process (signals do not).
func StartEmbedded(t testing.TB, mutate func(*embed.Config)) (*embed.Member, *Proc) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "e1"
	cfg.DataDir = filepath.Join(t.TempDir(), "e1.data")
	zero := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientURLs = []url.URL{zero}
	cfg.AdvertiseClientURLs = []url.URL{zero}
	cfg.Logger = testLogger(t)
	if mutate != nil {
		mutate(&cfg)
	}
	sctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	m, err := embed.StartMember(sctx, cfg)
	if err != nil {
		t.Fatalf("embed.StartMember: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("closing embedded member: %v", err)
		}
	})
	u := m.ListenClientURLs()[0]
	return m, &Proc{t: t, DataDir: cfg.DataDir, Endpoint: u.Host, ClientURL: u.String(), Logs: newLogBuffer()}
}
