package integration

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/pki"
	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
)

// peerPKI issues the certificates of a peer TLS test into one directory.
type peerPKI struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
}

func newPeerPKI(t *testing.T, dir, name string) *peerPKI {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return &peerPKI{t: t, dir: dir, ca: ca, caFile: caFile}
}

// issue writes a 127.0.0.1 certificate and returns etcd's peer flags for
// it (this CA trusted, client certificates required).
func (p *peerPKI) issue(file string, req pki.Request) ([]string, *pki.Issued) {
	p.t.Helper()
	if req.IPs == nil {
		req.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	iss, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, key, err := iss.WriteFiles(p.dir, file)
	if err != nil {
		p.t.Fatal(err)
	}
	return []string{"--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", p.caFile, "--peer-client-cert-auth"}, iss
}

// meshStatus reads a member's /mesh/status.
func meshStatus(t *testing.T, m *Member) mesh.Status {
	t.Helper()
	code, body := httpGet(t, m.ClientURL+"/mesh/status")
	var st mesh.Status
	if code != 200 {
		t.Fatalf("/mesh/status of %s: %d %s", m.Name, code, body)
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/mesh/status of %s: %v", m.Name, err)
	}
	return st
}

// A 3-member cluster with peer certificates (https:// peer URLs, static
// bootstrap) serves writes over mutual TLS mesh links. Members with a
// certificate from a foreign CA, an expired one, a revoked one (CRL), a
// disallowed CN, or one for another address than it connects from (etcd's
// client SAN check) are refused at the handshake, cannot disturb the cluster
// (writes go on, same leader and term), and every refusal is listed with
// its reason in the members' /mesh/status.
func TestPeerTLSClusterRefusesBadCertificates(t *testing.T) {
	dir := t.TempDir()
	p := newPeerPKI(t, dir, "ca")
	foreign := newPeerPKI(t, dir, "foreign-ca")
	good := map[string][]string{}
	for _, n := range []string{"m0", "m1", "m2"} {
		good[n], _ = p.issue(n, pki.Request{CommonName: "member"})
	}
	foreignArgs, _ := foreign.issue("foreign", pki.Request{CommonName: "member"})
	foreignArgs[5] = p.caFile // it trusts our CA: only the members' check refuses it
	expiredArgs, _ := p.issue("expired", pki.Request{CommonName: "member",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	revokedArgs, revoked := p.issue("revoked", pki.Request{CommonName: "member"})
	intruderArgs, _ := p.issue("intruder", pki.Request{CommonName: "intruder"})
	elsewhereArgs, _ := p.issue("elsewhere", pki.Request{CommonName: "member", IPs: []net.IP{net.IPv4(10, 99, 0, 1)}})
	crl, err := p.ca.CRL(revoked.Cert)
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(dir, "peers.crl")
	if err := os.WriteFile(crlFile, crl, 0o600); err != nil {
		t.Fatal(err)
	}

	c := StartCluster(t, ClusterOptions{PeerScheme: "https",
		Args:       []string{"--peer-crl-file", crlFile, "--peer-cert-allowed-cn", "member"},
		MemberArgs: func(m *Member) []string { return good[m.Name] }})
	c.WaitHealthy(t)
	for _, m := range c.Members {
		if st := meshStatus(t, m); st.Encryption != mesh.EncryptionTLS || len(st.Connections) < 2 {
			t.Fatalf("%s: encryption %q, %d connections", m.Name, st.Encryption, len(st.Connections))
		}
	}
	cli := c.Client(t)
	l := c.WaitLeader(t)
	st0, err := c.Status(ctx(t), c.statusClient(l), l)
	if err != nil {
		t.Fatal(err)
	}

	var seeds []string
	for _, m := range c.Members {
		seeds = append(seeds, strings.TrimPrefix(m.PeerURL, "https://"))
	}
	bad := []struct {
		name, reason string
		args         []string
	}{
		{"foreign", "peer certificate signed by an unknown CA", foreignArgs},
		{"expired", "peer certificate expired or not yet valid", expiredArgs},
		{"revoked", "peer certificate revoked (CRL)", revokedArgs},
		{"intruder", "peer certificate CN/hostname not allowed", intruderArgs},
		{"elsewhere", "peer certificate does not match its source address", elsewhereArgs},
	}
	var procs []*Proc
	for _, b := range bad {
		m := &Member{c: c, Idx: 99, Name: b.name}
		m.PeerURL = "https://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		m.ClientURL = "http://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		args := append([]string{"--name", m.Name, "--data-dir", filepath.Join(dir, b.name+".data"),
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster-token", c.Opts.Token, "--join", "--peers", strings.Join(seeds, ",")}, b.args...)
		pr := c.procFor(m, args)
		pr.t = t
		pr.start()
		procs = append(procs, pr)
	}
	defer func() {
		for _, pr := range procs {
			pr.Kill()
		}
	}()

	// The cluster keeps taking writes for at least 3 s and until every
	// member has refused every bad certificate with its reason.
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	writes := 0
	for {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(cctx, "peer-tls", strconv.Itoa(writes))
		cancel()
		if err != nil {
			t.Fatalf("write failed while bad members run: %v", err)
		}
		writes++
		missing := []string{}
		for _, m := range c.Members {
			reasons := map[string]bool{}
			for _, f := range meshStatus(t, m).HandshakeFailures {
				reasons[f.Reason] = true
			}
			for _, b := range bad {
				if !reasons[b.reason] {
					missing = append(missing, m.Name+": "+b.reason)
				}
			}
		}
		if len(missing) == 0 && time.Since(start) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals missing from /mesh/status: %v", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, pr := range procs {
		if strings.Contains(pr.Logs.String(), readyLine) {
			t.Errorf("%s became ready", bad[i].name)
		}
	}
	for _, m := range c.Members {
		if !strings.Contains(m.Logs.String(), "mesh handshake refused: peer certificate") {
			t.Errorf("%s did not log a certificate refusal", m.Name)
		}
		if st := meshStatus(t, m); len(st.Peers) != 3 {
			t.Errorf("%s knows %d mesh peers, want the 3 members", m.Name, len(st.Peers))
		}
	}
	if ml := ctlMemberList(t, c, 0); len(ml) != 3 {
		t.Errorf("membership changed: %+v", ml)
	}
	st1, err := c.Status(ctx(t), c.statusClient(l), l)
	if err != nil {
		t.Fatal(err)
	}
	if st1.RaftTerm != st0.RaftTerm || st1.Leader != st0.Leader {
		t.Errorf("bad members disturbed raft: term %d→%d, leader %x→%x", st0.RaftTerm, st1.RaftTerm, st0.Leader, st1.Leader)
	}
	t.Logf("%d writes while 5 bad members ran; term %d, leader unchanged", writes, st1.RaftTerm)
}

// --peer-auto-tls with https:// peer URLs forms a cluster, as in etcd
// (mesh links encrypted with ephemeral keys, not authenticated).
func TestPeerAutoTLSHTTPSCluster(t *testing.T) {
	c := StartCluster(t, ClusterOptions{PeerScheme: "https", Args: []string{"--peer-auto-tls"}})
	c.WaitHealthy(t)
	c.MustCtl(t, []int{0}, "put", "k", "v")
	if out := c.MustCtl(t, []int{2}, "get", "k", "--print-value-only"); strings.TrimSpace(out) != "v" {
		t.Errorf("get k = %q", out)
	}
	for _, m := range c.Members {
		if st := meshStatus(t, m); st.Encryption != mesh.EncryptionEphemeral {
			t.Errorf("%s: encryption %q, want %q", m.Name, st.Encryption, mesh.EncryptionEphemeral)
		}
	}
}

// Bad peer TLS settings fail like etcd 3.7: exit code 1 and etcd's error.
func TestPeerTLSBadFilesLikeEtcd(t *testing.T) {
	dir := t.TempDir()
	p := newPeerPKI(t, dir, "ca")
	goodArgs, _ := p.issue("good", pki.Request{CommonName: "member"})
	p.issue("other", pki.Request{CommonName: "other"})
	cases := []struct {
		name, want string
		args       []string
	}{
		{"https without certificates", "KeyFile and CertFile are not presented", nil},
		{"missing files", "open /nonexistent.crt: no such file or directory", []string{"--peer-cert-file", "/nonexistent.crt", "--peer-key-file", "/nonexistent.key"}},
		{"cert without key", "KeyFile and CertFile must both be present", []string{"--peer-cert-file", goodArgs[1]}},
		{"key that does not match", "private key does not match public key", []string{"--peer-cert-file", goodArgs[1], "--peer-key-file", filepath.Join(dir, "other.key")}},
		{"CN and hostname lists", "AllowedCNs and AllowedHostnames are mutually exclusive", append(goodArgs, "--peer-cert-allowed-cn", "a", "--peer-cert-allowed-hostname", "b")},
		{"missing CA", "open /nonexistent-ca.crt: no such file or directory", []string{"--peer-cert-file", goodArgs[1], "--peer-key-file", goodArgs[3], "--peer-trusted-ca-file", "/nonexistent-ca.crt"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachClusterServer(t, func(t *testing.T, bin string) {
				port, cport := testutil.FreePort(t), testutil.FreePort(t)
				peer := "https://127.0.0.1:" + strconv.Itoa(port)
				client := "http://127.0.0.1:" + strconv.Itoa(cport)
				args := append([]string{"--name", "m0", "--data-dir", filepath.Join(t.TempDir(), "d"),
					"--listen-client-urls", client, "--advertise-client-urls", client,
					"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "m0=" + peer}, tc.args...)
				c := &Cluster{t: t, Bin: bin, dir: t.TempDir()}
				pr := c.procFor(&Member{Name: "m0"}, args)
				pr.start()
				if code := pr.Wait(30 * time.Second); code != 1 {
					t.Errorf("exit code %d, want 1", code)
				}
				if !strings.Contains(pr.Logs.String(), tc.want) {
					t.Errorf("output does not contain %q:\n%s", tc.want, tail(pr.Logs.String(), 10))
				}
			})
		})
	}
}
