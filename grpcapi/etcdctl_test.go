package grpcapi

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// etcdctlBin finds etcd's own etcdctl 3.7.3 (make etcdctl builds it into
// bin/; the Makefile's integration run passes ETCDCTL_BIN).
func etcdctlBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ETCDCTL_BIN"); p != "" {
		return p
	}
	for _, p := range []string{"../bin/etcdctl", "../tools/bin/etcdctl"} {
		if abs, err := filepath.Abs(p); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
	}
	t.Skip("etcdctl not built (make etcdctl, or set ETCDCTL_BIN)")
	return ""
}

// TestEtcdctl runs etcd's etcdctl against a real kvstore served by this
// package: the commands the issue names must work unchanged.
func TestEtcdctl(t *testing.T) {
	bin := etcdctlBin(t)
	s := startKVStore(t)
	addr := serveForTest(t, s, Config{})

	exe := func(stdin string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--endpoints=" + addr, "--command-timeout=15s"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		// etcdctl warns about any ETCDCTL_* variable it does not know,
		// ETCDCTL_BIN included.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "ETCDCTL_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out) + stderr.String(), err
		}
		return string(out), nil
	}
	runIn := func(stdin string, args ...string) string {
		t.Helper()
		out, err := exe(stdin, args...)
		if err != nil {
			t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run := func(args ...string) string {
		t.Helper()
		return runIn("", args...)
	}
	failsIn := func(stdin, want string, args ...string) {
		t.Helper()
		out, err := exe(stdin, args...)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("etcdctl %s: err=%v, output %q, want failure containing %q", strings.Join(args, " "), err, out, want)
		}
	}
	fails := func(want string, args ...string) {
		t.Helper()
		failsIn("", want, args...)
	}

	if out := run("put", "foo", "bar"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("put: %q", out)
	}
	if out := run("get", "foo"); out != "foo\nbar\n" {
		t.Fatalf("get: %q", out)
	}
	if out := runIn("value(\"foo\") = \"bar\"\n\nput x 1\n\nput y 2\n\n", "txn"); out != "SUCCESS\n\nOK\n" {
		t.Fatalf("txn: %q", out)
	}

	var status []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Version string `json:"version"`
			Leader  uint64 `json:"leader"`
			DbSize  int64  `json:"dbSize"`
		}
	}
	if err := json.Unmarshal([]byte(run("endpoint", "status", "-w", "json")), &status); err != nil {
		t.Fatal(err)
	}
	if len(status) != 1 || status[0].Status.Leader != uint64(s.MemberID()) || status[0].Status.Version != "3.7.3" || status[0].Status.DbSize == 0 {
		t.Fatalf("endpoint status: %+v", status)
	}
	if out := run("endpoint", "health"); !strings.Contains(out, "is healthy") {
		t.Fatalf("endpoint health: %q", out)
	}
	if out := run("endpoint", "hashkv"); !strings.Contains(out, addr+", ") {
		t.Fatalf("endpoint hashkv: %q", out)
	}
	if out := run("defrag"); !strings.Contains(out, "Finished defragmenting etcd member") {
		t.Fatalf("defrag: %q", out)
	}
	if out := run("alarm", "list"); strings.TrimSpace(out) != "" {
		t.Fatalf("alarm list: %q", out)
	}
	if out := run("member", "list"); !strings.Contains(out, "default") || !strings.Contains(out, "started") {
		t.Fatalf("member list: %q", out)
	}
	db := filepath.Join(t.TempDir(), "snap.db")
	if out := run("snapshot", "save", db); !strings.Contains(out, "Snapshot saved at") {
		t.Fatalf("snapshot save: %q", out)
	}
	if out := run("compact", "2"); !strings.Contains(out, "compacted revision 2") {
		t.Fatalf("compact: %q", out)
	}
	fails("required revision has been compacted", "get", "foo", "--rev=1")
	fails("required revision is a future revision", "get", "foo", "--rev=1000")
	failsIn("\nput a 1\nput a 2\n\n\n", "duplicate key given in txn request", "txn")
}
