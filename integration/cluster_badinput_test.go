package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// A member with another --initial-cluster-token or another mesh secret is
// refused by the mesh at the handshake and cannot disturb the cluster: no
// new member, no term change, writes go on, and the refusal is logged.
func TestClusterRefusesWrongTokenOrSecret(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(secret, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("not the cluster's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := StartCluster(t, ClusterOptions{Token: "mtest-good", Args: []string{"--mesh-password-file", secret}})
	c.WaitHealthy(t)
	seed := strings.TrimPrefix(c.Members[0].PeerURL, "http://")

	cases := []struct {
		name string
		args []string
	}{
		{"wrong token, join", []string{"--initial-cluster-token", "mtest-bad", "--mesh-password-file", secret, "--join", "--peers", seed}},
		{"wrong secret, join", []string{"--initial-cluster-token", "mtest-good", "--mesh-password-file", other, "--join", "--peers", seed}},
		{"no secret, join", []string{"--initial-cluster-token", "mtest-good", "--join", "--peers", seed}},
		{"wrong token, static bootstrap naming the members", nil}, // filled below
	}
	cli := c.Client(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := c.WaitLeader(t)
			st0, err := c.Status(ctx(t), c.statusClient(l), l)
			if err != nil {
				t.Fatal(err)
			}
			// A process of its own (not part of c.Members).
			m := &Member{c: c, Idx: 99, Name: "intruder"}
			m.PeerURL = "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
			m.ClientURL = "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
			args := tc.args
			if args == nil {
				ic := []string{"intruder=" + m.PeerURL}
				for _, mm := range c.Members {
					ic = append(ic, mm.Name+"="+mm.PeerURL)
				}
				args = []string{"--initial-cluster-token", "mtest-bad", "--mesh-password-file", secret,
					"--initial-cluster", strings.Join(ic, ","), "--initial-cluster-state", "new"}
			}
			base := []string{"--name", m.Name, "--data-dir", filepath.Join(t.TempDir(), "intruder"),
				"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
				"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL}
			p := c.procFor(m, append(base, args...))
			p.t = t
			p.start()
			// Meanwhile the cluster keeps taking writes.
			end := time.Now().Add(5 * time.Second)
			writes := 0
			for time.Now().Before(end) {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := cli.Put(cctx, "badinput", strconv.Itoa(writes))
				cancel()
				if err != nil {
					t.Fatalf("write failed while the intruder runs: %v", err)
				}
				writes++
				time.Sleep(20 * time.Millisecond)
			}
			if strings.Contains(p.Logs.String(), readyLine) {
				t.Errorf("intruder became ready:\n%s", tail(p.Logs.String(), 30))
			}
			refused := strings.Contains(p.Logs.String(), "handshake refused")
			for _, mm := range c.Members {
				refused = refused || strings.Contains(mm.Logs.String(), "handshake refused")
			}
			if !refused {
				t.Errorf("no \"mesh handshake refused\" log line on either side")
			}
			p.Kill()
			if ml := ctlMemberList(t, c, 0); len(ml) != 3 {
				t.Errorf("membership changed: %+v", ml)
			}
			st1, err := c.Status(ctx(t), c.statusClient(l), l)
			if err != nil {
				t.Fatal(err)
			}
			if st1.RaftTerm != st0.RaftTerm || st1.Leader != st0.Leader {
				t.Errorf("intruder disturbed raft: term %d→%d, leader %x→%x", st0.RaftTerm, st1.RaftTerm, st0.Leader, st1.Leader)
			}
			t.Logf("%d writes while the intruder ran; term %d unchanged", writes, st1.RaftTerm)
		})
	}
}
