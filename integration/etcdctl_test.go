package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// updateGolden rewrites testdata/etcdctl_golden.txt from etcd 3.7.3:
//
//	go test ./integration -run TestEtcdctlMatchesEtcd -update-golden
//
// (needs bin/etcd; `make etcd` builds it).
var updateGolden = flag.Bool("update-golden", false, "record the etcdctl golden transcript from etcd")

type ctlStep struct {
	args  []string
	stdin string
}

func readCtlScript(t *testing.T) []ctlStep {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "etcdctl_script.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []ctlStep
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		case line == "<<":
			if len(steps) == 0 {
				t.Fatal("script: stdin block before any command")
			}
			var in strings.Builder
			for sc.Scan() && sc.Text() != ">>" {
				in.WriteString(sc.Text() + "\n")
			}
			steps[len(steps)-1].stdin = in.String()
		default:
			steps = append(steps, ctlStep{args: splitArgs(line)})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps
}

// splitArgs splits on spaces, honouring double quotes ("" is an empty arg).
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQ, have = !inQ, true
		case r == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

var (
	leaseGrantedRe = regexp.MustCompile(`lease ([0-9a-f]+) granted`)
	normalizers    = []struct {
		re   *regexp.Regexp
		repl string
	}{
		{regexp.MustCompile(`"(cluster_id|member_id|ID|leader|id|raft_term)":\d+`), `"$1":N`},
		{regexp.MustCompile(`\b[0-9a-f]{14,16}\b`), "<ID>"},
		{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
		{regexp.MustCompile(`"(ClusterID|MemberID|RaftTerm)" : \d+`), `"$1" : N`},
		{regexp.MustCompile(`took (= )?[0-9.]+[µmn]?s`), "took T"},
		// etcd-client's retry warnings (timestamps, pointers) are not output.
		{regexp.MustCompile(`(?m)^\{"level":.*\n`), ""},
		{regexp.MustCompile(`"lease":\d+`), `"lease":L`},
		// The KV hash covers lease ids, which are random.
		{regexp.MustCompile(`"hash":\d+`), `"hash":H`},
		// Remaining lease TTLs depend on timing.
		{regexp.MustCompile(`"ttl":\d+`), `"ttl":T`},
		{regexp.MustCompile(`"ID":"?[0-9a-f]+"?`), `"ID":N`},
		// endpoint status: sizes and raft positions depend on timing and
		// on how many internal entries each server writes.
		{regexp.MustCompile(`"(DBSize|DBSizeInUse|RaftIndex|RaftAppliedIndex|Leader)" : \d+`), `"$1" : N`},
		{regexp.MustCompile(`Snapshot saved at \S+`), "Snapshot saved at SNAP"},
	}
)

func normalizeCtl(s string) string {
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.repl)
	}
	return s
}

// runCtlScript runs the script against p and returns the normalised
// transcript: command, stdout, stderr and exit code of every step.
func runCtlScript(t *testing.T, p *Proc) string {
	t.Helper()
	var b strings.Builder
	vars := map[string]string{"SNAP": filepath.Join(t.TempDir(), "snapshot.db")}
	for _, st := range readCtlScript(t) {
		args := make([]string, len(st.args))
		for i, a := range st.args {
			for k, v := range vars {
				a = strings.ReplaceAll(a, "$"+k, v)
			}
			args[i] = a
		}
		out, errOut, err := p.CtlIn(st.stdin, args...)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("etcdctl %v: %v", args, err)
		}
		if m := leaseGrantedRe.FindStringSubmatch(out); m != nil {
			vars["LEASE"] = m[1]
		}
		fmt.Fprintf(&b, "$ etcdctl %s\n", strings.Join(st.args, " "))
		if st.stdin != "" {
			fmt.Fprintf(&b, "< %s\n", strings.ReplaceAll(strings.TrimRight(st.stdin, "\n"), "\n", "\n< "))
		}
		fmt.Fprintf(&b, "%s", normalizeCtl(out))
		if errOut != "" {
			fmt.Fprintf(&b, "stderr: %s", normalizeCtl(errOut))
		}
		fmt.Fprintf(&b, "exit %d\n\n", code)
	}
	return b.String()
}

// TestEtcdctlMatchesEtcd runs one scripted etcdctl session against
// meshetcd and compares the transcript with etcd 3.7.3's: recorded in
// testdata (so the test needs no etcd binary), and also live when bin/etcd
// exists.
func TestEtcdctlMatchesEtcd(t *testing.T) {
	goldenPath := filepath.Join("testdata", "etcdctl_golden.txt")
	if *updateGolden {
		if bins.etcd == "" {
			t.Fatal("-update-golden needs bin/etcd (make etcd)")
		}
		got := runCtlScript(t, StartProc(t, ProcOptions{Bin: bins.etcd}))
		if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	goldenB, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("reading golden transcript: %v", err)
	}
	golden := string(goldenB)
	if bins.etcd != "" {
		t.Run("etcd-still-matches-golden", func(t *testing.T) {
			if got := runCtlScript(t, StartProc(t, ProcOptions{Bin: bins.etcd})); got != golden {
				t.Errorf("etcd's transcript no longer matches %s (re-record with -update-golden):\n%s", goldenPath, lineDiff(golden, got))
			}
		})
	}
	t.Run("meshetcd", func(t *testing.T) {
		if got := runCtlScript(t, StartProc(t, ProcOptions{})); got != golden {
			t.Errorf("meshetcd's etcdctl transcript differs from etcd's (- etcd, + meshetcd):\n%s", lineDiff(golden, got))
		}
	})
}

// lineDiff shows the differing regions of two transcripts, step by step.
func lineDiff(want, got string) string {
	ws, gs := strings.Split(want, "\n\n"), strings.Split(got, "\n\n")
	var b strings.Builder
	for i := 0; i < len(ws) || i < len(gs); i++ {
		var w, g string
		if i < len(ws) {
			w = ws[i]
		}
		if i < len(gs) {
			g = gs[i]
		}
		if w != g {
			fmt.Fprintf(&b, "- %s\n+ %s\n\n", strings.ReplaceAll(w, "\n", "\n- "), strings.ReplaceAll(g, "\n", "\n+ "))
		}
	}
	return b.String()
}

// TestEtcdctlAdminCommands covers the etcdctl commands whose output cannot
// be compared byte for byte with etcd's (sizes, versions, files).
func TestEtcdctlAdminCommands(t *testing.T) {
	p := StartProc(t, ProcOptions{})
	for i := 0; i < 20; i++ {
		p.MustCtl(t, "put", fmt.Sprintf("key/%02d", i), strings.Repeat("v", 100))
	}

	// endpoint status: this member, leader, etcd's version string, revision.
	var status []struct {
		Endpoint string `json:"Endpoint"`
		Status   struct {
			Header struct {
				Revision int64  `json:"revision"`
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Version   string `json:"version"`
			DbSize    int64  `json:"dbSize"`
			Leader    uint64 `json:"leader"`
			RaftIndex uint64 `json:"raftIndex"`
			RaftTerm  uint64 `json:"raftTerm"`
		} `json:"Status"`
	}
	if err := json.Unmarshal([]byte(p.MustCtl(t, "endpoint", "status", "-w", "json")), &status); err != nil {
		t.Fatalf("endpoint status json: %v", err)
	}
	if len(status) != 1 {
		t.Fatalf("endpoint status: %d entries", len(status))
	}
	st := status[0].Status
	if st.Header.Revision != 21 || st.Leader == 0 || st.Leader != st.Header.MemberID || st.DbSize <= 0 || st.RaftTerm == 0 || st.RaftIndex < 21 || !strings.HasPrefix(st.Version, "3.7") {
		t.Errorf("endpoint status = %+v", st)
	}
	if out := p.MustCtl(t, "endpoint", "status", "-w", "table"); !strings.Contains(out, p.Endpoint) || !strings.Contains(out, "true") {
		t.Errorf("endpoint status table:\n%s", out)
	}
	if out := p.MustCtl(t, "endpoint", "health"); !strings.Contains(out, p.Endpoint+" is healthy: successfully committed proposal") {
		t.Errorf("endpoint health: %s", out)
	}
	if out := p.MustCtl(t, "member", "list"); !strings.Contains(out, ", started, m1, ") || !strings.Contains(out, p.ClientURL) {
		t.Errorf("member list: %s", out)
	}

	// snapshot save writes a bbolt file with etcd's sha256 trailer check
	// done by etcdctl itself; the file must hold our keys.
	snapPath := filepath.Join(t.TempDir(), "snap.db")
	out := p.MustCtl(t, "snapshot", "save", snapPath)
	if !strings.Contains(out, "Snapshot saved at "+snapPath) {
		t.Errorf("snapshot save output: %s", out)
	}
	fi, err := os.Stat(snapPath)
	if err != nil || fi.Size() < 16*1024 {
		t.Fatalf("snapshot file: %v size=%d", err, fi.Size())
	}
	if !fileContains(t, snapPath, "key/19") {
		t.Errorf("snapshot file does not contain key/19")
	}

	// The same over clientv3: the Maintenance Snapshot stream ends with a
	// sha256 of everything before it, as etcd's does.
	c := p.Client(t)
	rc, err := c.Snapshot(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < sha256.Size+1 {
		t.Fatalf("snapshot stream too short: %d", len(data))
	}
	sum := sha256.Sum256(data[:len(data)-sha256.Size])
	if hex.EncodeToString(sum[:]) != hex.EncodeToString(data[len(data)-sha256.Size:]) {
		t.Errorf("snapshot stream trailer is not the sha256 of the db")
	}
}

func fileContains(t *testing.T, path, s string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), s)
}
