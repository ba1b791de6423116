package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshetcd/meshetcd/internal/testutil"
)

// TestPeersDNSNameSeedsEveryAddress: --peers takes a DNS name and dials every
// address it resolves to, as with a Kubernetes headless Service. Three
// member processes listen on 127.0.0.2-4 with the same peer port; each gets
// only --peers members.meshetcd.test:<port>. The name resolves first to a
// decoy (127.0.0.5, which accepts TCP and hangs up, like a pod that is not
// a member): dialling the name as one address would always reach the decoy,
// so the members find each other only if every address is a seed.
// The name is in an /etc/hosts
// that each process sees through a bind mount in its own private mount
// namespace (unshare -m), so the machine's /etc/hosts is never modified.
func TestPeersDNSNameSeedsEveryAddress(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace (unshare -m)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	const name = "members.meshetcd.test"
	const decoy = "127.0.0.5"
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	port := sharedFreePort(t, append([]string{decoy}, ips...))
	l, err := net.Listen("tcp", net.JoinHostPort(decoy, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	hosts := filepath.Join(t.TempDir(), "hosts")
	content := "127.0.0.1 localhost\n" + decoy + " " + name + "\n"
	for _, ip := range ips {
		content += ip + " " + name + "\n"
	}
	if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// The bind mount happens inside the new namespace only (unshare makes
	// its mounts private), then the shell becomes meshetcd.
	if out, err := exec.Command("unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /etc/hosts && exec getent ahostsv4 `+name, hosts).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount /etc/hosts in a private mount namespace: %v\n%s", err, out)
	}

	c := &Cluster{t: t, Bin: bins.meshetcd, Opts: ClusterOptions{Token: "mtest-dns-seeds"}, dir: t.TempDir()}
	for i, ip := range ips {
		m := &Member{c: c, Idx: i, Name: fmt.Sprintf("dns%d", i),
			PeerURL:   fmt.Sprintf("http://%s:%d", ip, port),
			ClientURL: fmt.Sprintf("http://%s:%d", ip, testutil.FreePort(t))}
		c.Members = append(c.Members, m)
		p := c.procFor(m, append(c.memberArgs(m, "", ""), "--discovery-size", "3", "--peers", fmt.Sprintf("%s:%d", name, port), "--discovery-timeout", "20s"))
		p.args = append([]string{"-m", "--", "sh", "-c", `mount --bind "$0" /etc/hosts && shift && exec "$@"`, hosts, "--", p.bin}, p.args...)
		p.bin = "unshare"
		m.Proc = p
		p.start()
	}
	c.WaitReady()
	c.WaitLeader(t)
	for i := range c.Members {
		if ml := ctlMemberList(t, c, i); len(ml) != 3 {
			t.Errorf("member list via %d: %+v", i, ml)
		}
	}
	if data, err := os.ReadFile("/etc/hosts"); err == nil && strings.Contains(string(data), name) {
		t.Errorf("the machine's /etc/hosts was modified")
	}
}

// sharedFreePort is a port free on every one of ips.
func sharedFreePort(t *testing.T, ips []string) int {
	t.Helper()
	for tries := 0; tries < 50; tries++ {
		p := testutil.FreePort(t)
		free := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(p)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}
