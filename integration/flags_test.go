package integration

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestVersionAndHelp(t *testing.T) {
	code, out := RunOnce(t, bins.meshetcd, nil, "--version")
	if code != 0 {
		t.Fatalf("--version exited %d:\n%s", code, out)
	}
	for _, want := range []string{"meshetcd Version: ", "Git SHA: ", "Go Version: ", "Go OS/Arch: ", "etcd API Version: 3.7"} {
		if !strings.Contains(out, want) {
			t.Errorf("--version output lacks %q:\n%s", want, out)
		}
	}
	code, out = RunOnce(t, bins.meshetcd, nil, "--help")
	if code != 0 || !strings.Contains(out, "--initial-cluster-token") {
		t.Errorf("--help exited %d:\n%s", code, out)
	}
}

func TestBadUsageExits2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{args: []string{"--no-such-flag"}, want: "no-such-flag"},
		{args: []string{"--cipher-suites", "FOO"}, want: `unexpected TLS cipher suite "FOO"`},
		// Flags whose protection meshetcd does not implement are refused,
		// never ignored.
		{args: []string{"--cors=http://a.example"}, want: "--cors"},
		{env: []string{"ETCD_TLS_MIN_VERSION=TLS1.1"}, want: `unexpected TLS version "TLS1.1"`},
		{env: []string{"ETCD_SNAPSHOT_COUNT=lots"}, want: "ETCD_SNAPSHOT_COUNT"},
		{args: []string{"--listen-client-urls=http://127.0.0.1:0"}, want: "--advertise-client-urls is required"},
		{args: []string{"--heartbeat-interval=500"}, want: "at least as 5 times"},
	} {
		code, out := RunOnce(t, bins.meshetcd, tc.env, tc.args...)
		if code != 2 {
			t.Errorf("%v %v: exit code %d, want 2\n%s", tc.env, tc.args, code, out)
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%v %v: output does not mention %q:\n%s", tc.env, tc.args, tc.want, out)
		}
	}
}

// TestFlagFormsAndEnv starts members configured through --f=v, --f v,
// etcd's single-dash -f v and ETCD_* variables, and checks the result
// through the running server (member name in `member list`).
func TestFlagFormsAndEnv(t *testing.T) {
	t.Run("equals", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		p := StartProc(t, ProcOptions{NoDefaults: true, DataDir: dir, Args: []string{
			"--name=eq", "--data-dir=" + dir, "--listen-client-urls=http://127.0.0.1:0", "--advertise-client-urls=http://127.0.0.1:0",
			"--listen-peer-urls=http://127.0.0.1:0", "--initial-advertise-peer-urls=http://127.0.0.1:0"}})
		assertMemberName(t, p, "eq")
	})
	t.Run("space-and-single-dash", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		p := StartProc(t, ProcOptions{NoDefaults: true, DataDir: dir, Args: []string{
			"-name", "sp", "--data-dir", dir, "-listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
			"--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0"}})
		assertMemberName(t, p, "sp")
	})
	t.Run("env-and-unknown-env", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		p := StartProc(t, ProcOptions{NoDefaults: true, DataDir: dir, Env: []string{
			"ETCD_NAME=fromenv", "ETCD_DATA_DIR=" + dir,
			"ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:0", "ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:0",
			"ETCD_LISTEN_PEER_URLS=http://127.0.0.1:0", "ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:0",
			"ETCD_NOT_A_FLAG=1",
		}})
		assertMemberName(t, p, "fromenv")
		if !strings.Contains(p.Logs.String(), "unrecognized environment variable") {
			t.Errorf("no warning about ETCD_NOT_A_FLAG in the log")
		}
	})
	t.Run("flag-beats-env", func(t *testing.T) {
		p := StartProc(t, ProcOptions{Name: "fromflag", Env: []string{"ETCD_NAME=fromenv"}})
		assertMemberName(t, p, "fromflag")
	})
	t.Run("harmless-flag-warns", func(t *testing.T) {
		p := StartProc(t, ProcOptions{Args: []string{"--max-wals=3", "--pre-vote=true"}})
		if !strings.Contains(p.Logs.String(), "not implemented by meshetcd") {
			t.Errorf("no warning for --max-wals")
		}
	})
}

func assertMemberName(t *testing.T, p *Proc, name string) {
	t.Helper()
	out := p.MustCtl(t, "member", "list")
	if !strings.Contains(out, ", "+name+", ") {
		t.Errorf("member list does not show name %q:\n%s", name, out)
	}
}

func TestSIGTERMExitsZero(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	p.MustCtl(t, "put", "k", "v")
	if code := p.Stop(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0\n%s", code, tail(p.Logs.String(), 40))
	}
	p2 := StartProc(t, ProcOptions{DataDir: p.DataDir})
	if out := p2.MustCtl(t, "get", "k", "--print-value-only"); strings.TrimSpace(out) != "v" {
		t.Errorf("after a clean restart get k = %q, want v", out)
	}
	p2.Signal(syscall.SIGINT)
	if code := p2.Wait(exitTimeout); code != 0 {
		t.Errorf("exit code after SIGINT = %d, want 0", code)
	}
}

func TestSecondStartOnSameDataDirFailsFast(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	start := time.Now()
	code, out := RunOnce(t, bins.meshetcd, nil,
		"--name", "m1", "--data-dir", p.DataDir,
		"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
		"--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0")
	if code != 1 {
		t.Errorf("second start exit code %d, want 1\n%s", code, out)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("second start took %v to fail; it should fail at once", took)
	}
	if !strings.Contains(strings.ToLower(out), "lock") && !strings.Contains(out, "in use") {
		t.Errorf("second start error does not say the data dir is in use:\n%s", out)
	}
	// The first member is unharmed.
	p.MustCtl(t, "put", "still", "here")
}

// TestDefaultsNoFlags starts meshetcd with no flags at all: name default,
// ./default.meshetcd, clients on 127.0.0.1:2379. It is the one test that
// uses etcd's default ports, so it skips when they are busy.
func TestDefaultsNoFlags(t *testing.T) {
	for _, port := range []string{"2379", "2380"} {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Skipf("port %s is busy: %v", port, err)
		}
		l.Close()
	}
	wd := t.TempDir()
	p := StartProc(t, ProcOptions{NoDefaults: true, Dir: wd, DataDir: filepath.Join(wd, "default.meshetcd")})
	if p.Endpoint != "127.0.0.1:2379" {
		t.Errorf("client endpoint %q, want 127.0.0.1:2379", p.Endpoint)
	}
	p.MustCtl(t, "put", "a", "1")
	out := p.MustCtl(t, "member", "list")
	if !strings.Contains(out, ", default, http://127.0.0.1:2380, http://127.0.0.1:2379") {
		t.Errorf("member list:\n%s", out)
	}
	if code := p.Stop(); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if _, err := os.Stat(filepath.Join(wd, "default.meshetcd", "member")); err != nil {
		t.Errorf("data not in ./default.meshetcd: %v", err)
	}
}

// TestHTTPEndpointsAndPprof: /health, /version and /metrics share the
// client port; /debug/pprof/ only with --enable-pprof; --log-outputs
// writes the log to a file.
func TestHTTPEndpointsAndPprof(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "logs", "member.log")
	p := StartProc(t, ProcOptions{Args: []string{"--enable-pprof", "--log-outputs", "stderr," + logFile}})
	for path, want := range map[string]string{
		"/health":       `"health":"true"`,
		"/version":      `"etcdcluster":"3.7`,
		"/metrics":      "etcd_mvcc_db_total_size_in_bytes",
		"/debug/pprof/": "goroutine",
	} {
		code, body := httpGet(t, p.ClientURL+path)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.300s", path, code, want, body)
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(b), readyLine) {
		t.Errorf("--log-outputs file: %v, ready line present=%v", err, strings.Contains(string(b), readyLine))
	}

	// etcd's JSON gateway, on by default.
	if code, body := httpPost(t, p.ClientURL+"/v3/kv/put", `{"key":"Z3c=","value":"b2s="}`); code != 200 || !strings.Contains(body, `"revision":"2"`) {
		t.Errorf("gateway put: %d %s", code, body)
	}
	if code, body := httpPost(t, p.ClientURL+"/v3/kv/range", `{"key":"Z3c="}`); code != 200 || !strings.Contains(body, `"value":"b2s="`) {
		t.Errorf("gateway range: %d %s", code, body)
	}

	q := StartProc(t, ProcOptions{Args: []string{"--enable-grpc-gateway=false"}})
	if code, _ := httpGet(t, q.ClientURL+"/debug/pprof/"); code != 404 {
		t.Errorf("/debug/pprof/ without --enable-pprof: %d, want 404", code)
	}
	if code, _ := httpPost(t, q.ClientURL+"/v3/kv/range", `{"key":"Z3c="}`); code != 404 {
		t.Errorf("gateway with --enable-grpc-gateway=false: %d, want 404", code)
	}
}

func httpPost(t *testing.T, u, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: reqTimeout}
	resp, err := c.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: reqTimeout}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRestartIgnoresBootstrapFlags: like etcd, a member whose data dir
// already holds a WAL ignores --initial-cluster-state/-token on restart.
func TestRestartIgnoresBootstrapFlags(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	p.MustCtl(t, "put", "boot", "strap")
	before := p.MustCtl(t, "member", "list", "-w", "json")
	if code := p.Stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	q := StartProc(t, ProcOptions{DataDir: p.DataDir, Args: []string{"--initial-cluster-state=existing", "--initial-cluster-token=other-token"}})
	if out := q.MustCtl(t, "get", "boot", "--print-value-only"); strings.TrimSpace(out) != "strap" {
		t.Errorf("get after restart = %q", out)
	}
	after := q.MustCtl(t, "member", "list", "-w", "json")
	idRe := regexp.MustCompile(`"cluster_id":\d+`)
	if idRe.FindString(before) != idRe.FindString(after) {
		t.Errorf("cluster id changed across restart:\n%s\n%s", before, after)
	}
}

// TestUnusableDataDirExits1: a data dir that cannot be created is a clear
// runtime error (exit 1), not a panic.
func TestUnusableDataDirExits1(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := RunOnce(t, bins.meshetcd, nil, "--data-dir", filepath.Join(file, "data"),
		"--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0")
	if code != 1 {
		t.Errorf("exit code %d, want 1\n%s", code, out)
	}
	assertNoPanic(t, out)
	if !strings.Contains(out, "not-a-dir") {
		t.Errorf("error does not name the data dir:\n%s", out)
	}
}
