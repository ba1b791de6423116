package integration

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdctl watch / lease / lock / elect against a real member process. Each
// test also runs against etcd 3.7.3 when its binary is available
// (forEachServer), which proves the expected output is etcd's.

// bgCtl is an etcdctl process that keeps running (watch, elect, lock) while
// the test goes on. It is killed at the end of the test that started it.
type bgCtl struct {
	cmd  *exec.Cmd
	out  *logBuffer // stdout and stderr
	done chan struct{}
}

func startCtl(t *testing.T, endpoint string, args ...string) *bgCtl {
	t.Helper()
	full := append([]string{"--endpoints=" + endpoint, "--dial-timeout=10s"}, args...)
	cmd := exec.Command(bins.etcdctl, full...)
	cmd.Env = cleanEnv()
	b := &bgCtl{cmd: cmd, out: newLogBuffer(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.out, b.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting etcdctl %v: %v", args, err)
	}
	go func() {
		defer close(b.done)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-b.done
	})
	return b
}

// waitOutput waits until the output satisfies ok, and returns it.
func (b *bgCtl) waitOutput(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.After(ctlTimeout)
	for {
		s, wake := b.out.snapshot()
		if ok(s) {
			return s
		}
		select {
		case <-wake:
		case <-b.done:
			if s := b.out.String(); ok(s) {
				return s
			}
			t.Fatalf("etcdctl exited before %s; output:\n%s", what, b.out.String())
		case <-deadline:
			t.Fatalf("timed out waiting for %s; output:\n%s", what, s)
		}
	}
}

// interrupt sends SIGINT (etcdctl resigns/unlocks on it) and waits for exit.
func (b *bgCtl) interrupt(t *testing.T) {
	t.Helper()
	_ = b.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-b.done:
	case <-time.After(exitTimeout):
		t.Fatal("etcdctl did not exit on SIGINT")
	}
}

func outputLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }

func TestEtcdctlWatch(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		p.MustCtl(t, "put", "foo", "a")        // rev 2
		p.MustCtl(t, "put", "foo", "b")        // rev 3
		p.MustCtl(t, "del", "foo")             // rev 4
		p.MustCtl(t, "put", "foobar", "other") // rev 5

		// History replay from revision 2 with previous values; once the
		// history is printed the watch is live.
		w := startCtl(t, p.Endpoint, "watch", "--rev=2", "--prev-kv", "--prefix", "foo")
		replay := "PUT\nfoo\na\n" + "PUT\nfoo\na\nfoo\nb\n" + "DELETE\nfoo\nb\nfoo\n\n" + "PUT\nfoobar\nother\n"
		w.waitOutput(t, "history replay", func(s string) bool { return strings.HasPrefix(s, replay) || len(s) > len(replay) })
		if got := w.out.String(); got != replay {
			t.Fatalf("replay:\n%q\nwant\n%q", got, replay)
		}
		p.MustCtl(t, "put", "foo", "c")
		p.MustCtl(t, "put", "zzz", "not watched")
		p.MustCtl(t, "put", "foobar", "again")
		want := replay + "PUT\nfoo\nc\n" + "PUT\nfoobar\nother\nfoobar\nagain\n"
		w.waitOutput(t, "live events", func(s string) bool { return len(s) >= len(want) })
		if got := w.out.String(); got != want {
			t.Fatalf("watch output:\n%q\nwant\n%q", got, want)
		}

		// A compacted start revision fails the watch with etcd's error.
		p.MustCtl(t, "compact", "4")
		out, errOut, err := p.Ctl("watch", "--rev=2", "foo")
		if err == nil || !strings.Contains(out+errOut, "required revision has been compacted") {
			t.Fatalf("watch from compacted revision: err=%v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
	})
}

var leaseIDRe = regexp.MustCompile(`^lease ([0-9a-f]+) granted with TTL\(60s\)$`)

func TestEtcdctlLease(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		m := leaseIDRe.FindStringSubmatch(strings.TrimSpace(p.MustCtl(t, "lease", "grant", "60")))
		if m == nil {
			t.Fatal("lease grant output not recognised")
		}
		id := m[1]
		p.MustCtl(t, "put", "leased", "v", "--lease="+id)

		ttl := strings.TrimSpace(p.MustCtl(t, "lease", "timetolive", id, "--keys"))
		if !regexp.MustCompile(`^lease ` + id + ` granted with TTL\(60s\), remaining\((59|60)s\), attached keys\(\[leased\]\)$`).MatchString(ttl) {
			t.Fatalf("timetolive: %q", ttl)
		}
		if got := strings.TrimSpace(p.MustCtl(t, "lease", "keep-alive", "--once", id)); got != "lease "+id+" keepalived with TTL(60)" {
			t.Fatalf("keep-alive --once: %q", got)
		}
		if got := p.MustCtl(t, "lease", "list"); !strings.Contains(got, "found 1 leases\n"+id+"\n") {
			t.Fatalf("lease list: %q", got)
		}

		// Revoking deletes the attached key; a watcher sees the DELETE.
		w := startCtl(t, p.Endpoint, "watch", "leased", "--rev=1")
		w.waitOutput(t, "the put", func(s string) bool { return strings.Contains(s, "PUT\nleased\nv\n") })
		if got := strings.TrimSpace(p.MustCtl(t, "lease", "revoke", id)); got != "lease "+id+" revoked" {
			t.Fatalf("revoke: %q", got)
		}
		w.waitOutput(t, "the DELETE", func(s string) bool { return strings.HasSuffix(s, "DELETE\nleased\n\n") })
		if got := p.MustCtl(t, "get", "leased"); got != "" {
			t.Fatalf("key after revoke: %q", got)
		}

		// Unknown leases: etcd's messages and exit codes.
		if got := strings.TrimSpace(p.MustCtl(t, "lease", "timetolive", "1234")); got != "lease 0000000000001234 already expired" {
			t.Fatalf("timetolive unknown: %q", got)
		}
		out, errOut, err := p.Ctl("lease", "keep-alive", "--once", "1234")
		if code := exitCode(err); code != 2 || !strings.Contains(errOut, "Error: etcdserver: requested lease not found") {
			t.Fatalf("keep-alive --once unknown: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		out, errOut, err = p.Ctl("lease", "revoke", "1234")
		if code := exitCode(err); code != 1 || !strings.Contains(errOut, "Error: failed to revoke lease (etcdserver: requested lease not found)") {
			t.Fatalf("revoke unknown: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		out, errOut, err = p.Ctl("lease", "grant", strconv.Itoa(9000000001))
		if err == nil || !strings.Contains(errOut, "etcdserver: too large lease TTL") {
			t.Fatalf("grant beyond max TTL: err=%v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
	})
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestEtcdctlLock: two etcdctl lock commands running a program under the
// same lock never overlap.
func TestEtcdctlLock(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		prog := `echo start $(date +%s%N); sleep 0.3; echo end $(date +%s%N)`
		a := startCtl(t, p.Endpoint, "lock", "L", "--", "sh", "-c", prog)
		b := startCtl(t, p.Endpoint, "lock", "L", "--", "sh", "-c", prog)
		type span struct{ start, end int64 }
		parse := func(c *bgCtl) span {
			out := c.waitOutput(t, "the locked program to finish", func(s string) bool { return strings.Contains(s, "end ") })
			var sp span
			for _, l := range outputLines(out) {
				f := strings.Fields(l)
				if len(f) == 2 && (f[0] == "start" || f[0] == "end") {
					n, err := strconv.ParseInt(f[1], 10, 64)
					if err != nil {
						t.Fatalf("bad output line %q", l)
					}
					if f[0] == "start" {
						sp.start = n
					} else {
						sp.end = n
					}
				}
			}
			if sp.start == 0 || sp.end == 0 {
				t.Fatalf("output without start/end: %q", out)
			}
			return sp
		}
		sa, sb := parse(a), parse(b)
		if sa.start < sb.end && sb.start < sa.end {
			t.Fatalf("lock holders overlapped: %v and %v", sa, sb)
		}
		for _, c := range []*bgCtl{a, b} {
			select {
			case <-c.done:
			case <-time.After(exitTimeout):
				t.Fatal("etcdctl lock did not exit after its program")
			}
		}
	})
}

// TestEtcdctlElect: elect --listen reports the first leader, and the
// second candidate once the first resigns (SIGINT).
func TestEtcdctlElect(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		leaderRe := regexp.MustCompile(`(?m)^E/[0-9a-f]+\n(p[12])\n`)
		listen := startCtl(t, p.Endpoint, "elect", "--listen", "E")
		p1 := startCtl(t, p.Endpoint, "elect", "E", "p1")
		p1.waitOutput(t, "p1 to lead", func(s string) bool { return leaderRe.MatchString(s) })
		listen.waitOutput(t, "p1 observed", func(s string) bool { return strings.Contains(s, "\np1\n") })

		p2 := startCtl(t, p.Endpoint, "elect", "E", "p2")
		// p2 must not lead while p1 does; give it a moment to (wrongly) win.
		time.Sleep(500 * time.Millisecond)
		if s := p2.out.String(); s != "" {
			t.Fatalf("p2 output while p1 leads: %q", s)
		}
		p1.interrupt(t)
		p2.waitOutput(t, "p2 to lead", func(s string) bool { return leaderRe.MatchString(s) })
		out := listen.waitOutput(t, "p2 observed", func(s string) bool { return strings.Contains(s, "\np2\n") })
		if got := leaderRe.FindAllStringSubmatch(out, -1); len(got) != 2 || got[0][1] != "p1" || got[1][1] != "p2" {
			t.Fatalf("listener output %q", out)
		}
		p2.interrupt(t)
	})
}

// TestWatchLeaseWireDetails checks, on the wire and against etcd too, the
// replies that clientv3 and etcdctl hide: duplicate and client-chosen watch
// ids, negative start revision, empty ranges, cancel of an unknown id,
// keepalive and time-to-live of unknown leases, and the cancel reason of a
// watch the user may not read.
func TestWatchLeaseWireDetails(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		rctx := ctx(t)
		rev := mustPut(t, c, "a", "1").Header.Revision
		ws, err := pb.NewWatchClient(c.ActiveConnection()).Watch(rctx)
		if err != nil {
			t.Fatal(err)
		}
		create := func(cr *pb.WatchCreateRequest) {
			t.Helper()
			if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
				t.Fatal(err)
			}
		}
		recv := func() *pb.WatchResponse {
			t.Helper()
			r, err := ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		expect := func(what string, r *pb.WatchResponse, id int64, created, canceled bool, reason string) {
			t.Helper()
			if r.WatchId != id || r.Created != created || r.Canceled != canceled || r.CancelReason != reason || r.Header.GetRevision() != rev {
				t.Fatalf("%s: got %+v; want id=%d created=%v canceled=%v reason=%q rev=%d", what, r, id, created, canceled, reason, rev)
			}
		}
		create(&pb.WatchCreateRequest{Key: []byte("a"), WatchId: 42})
		expect("client-chosen id", recv(), 42, true, false, "")
		create(&pb.WatchCreateRequest{Key: []byte("b"), WatchId: 42})
		expect("duplicate id", recv(), -1, true, true, "mvcc: duplicate watch ID provided on the WatchStream")
		create(&pb.WatchCreateRequest{Key: []byte("a"), StartRevision: -1})
		expect("negative start revision", recv(), -1, true, true, "etcdserver: mvcc: required revision has been compacted")
		create(&pb.WatchCreateRequest{Key: []byte("z"), RangeEnd: []byte("a")})
		expect("empty range", recv(), -1, true, true, "mvcc: watcher range is empty")
		create(&pb.WatchCreateRequest{Key: []byte("a")})
		expect("auto id", recv(), 0, true, false, "")
		if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 999}}}); err != nil {
			t.Fatal(err)
		}
		if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
			t.Fatal(err)
		}
		expect("progress after unknown cancel (nothing in between)", recv(), -1, false, false, "")
		if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 42}}}); err != nil {
			t.Fatal(err)
		}
		expect("cancel", recv(), 42, false, true, "")

		// Leases.
		lc := pb.NewLeaseClient(c.ActiveConnection())
		ka, err := lc.LeaseKeepAlive(rctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: 4242}); err != nil {
			t.Fatal(err)
		}
		if r, err := ka.Recv(); err != nil || r.ID != 4242 || r.TTL != 0 {
			t.Fatalf("keepalive of unknown lease: %+v %v", r, err)
		}
		if r, err := lc.LeaseTimeToLive(rctx, &pb.LeaseTimeToLiveRequest{ID: 4242, Keys: true}); err != nil || r.ID != 4242 || r.TTL != -1 || r.GrantedTTL != 0 || len(r.Keys) != 0 {
			t.Fatalf("time to live of unknown lease: %+v %v", r, err)
		}
		if _, err := lc.LeaseRevoke(rctx, &pb.LeaseRevokeRequest{ID: 4242}); status.Code(err) != codes.NotFound || status.Convert(err).Message() != "etcdserver: requested lease not found" {
			t.Fatalf("revoke unknown: %v", err)
		}
		if _, err := lc.LeaseGrant(rctx, &pb.LeaseGrantRequest{TTL: 9000000001}); status.Code(err) != codes.OutOfRange || status.Convert(err).Message() != "etcdserver: too large lease TTL" {
			t.Fatalf("grant beyond max TTL: %v", err)
		}
		if _, err := lc.LeaseGrant(rctx, &pb.LeaseGrantRequest{ID: 77, TTL: 60}); err != nil {
			t.Fatal(err)
		}
		if _, err := lc.LeaseGrant(rctx, &pb.LeaseGrantRequest{ID: 77, TTL: 60}); status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "etcdserver: lease already exists" {
			t.Fatalf("grant of an existing id: %v", err)
		}

		// Watch permission: the cancel reason is the gRPC error's full text.
		for _, args := range [][]string{
			{"user", "add", "root:rootpw"}, {"user", "grant-role", "root", "root"},
			{"role", "add", "reader"}, {"role", "grant-permission", "reader", "read", "a", "c"},
			{"user", "add", "alice:alicepw"}, {"user", "grant-role", "alice", "reader"},
			{"auth", "enable"},
		} {
			p.MustCtl(t, args...)
		}
		alice, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Endpoint}, Username: "alice", Password: "alicepw", DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer alice.Close()
		aws, err := pb.NewWatchClient(alice.ActiveConnection()).Watch(rctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := aws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("z")}}}); err != nil {
			t.Fatal(err)
		}
		r, err := aws.Recv()
		if err != nil || r.WatchId != -1 || !r.Created || !r.Canceled ||
			r.CancelReason != "rpc error: code = PermissionDenied desc = etcdserver: permission denied" {
			t.Fatalf("watch without permission: %+v %v", r, err)
		}
	})
}

// forEachServerArgs is forEachServer with extra member flags.
func forEachServerArgs(t *testing.T, args []string, fn func(t *testing.T, p *Proc)) {
	t.Run("meshetcd", func(t *testing.T) {
		fn(t, StartProc(t, ProcOptions{Args: args}))
	})
	if bins.etcd != "" {
		t.Run("etcd", func(t *testing.T) {
			fn(t, StartProc(t, ProcOptions{Bin: bins.etcd, Args: args}))
		})
	}
}

// TestWatchProgressNotifyFlag: --watch-progress-notify-interval reaches the
// Watch service; an idle watcher that asked for progress gets notified.
func TestWatchProgressNotifyFlag(t *testing.T) {
	forEachServerArgs(t, []string{"--watch-progress-notify-interval=200ms"}, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		rev := mustPut(t, c, "k", "v").Header.Revision
		wch := c.Watch(ctx(t), "idle", clientv3.WithProgressNotify())
		for range 2 {
			select {
			case wr := <-wch:
				if !wr.IsProgressNotify() || wr.Header.Revision != rev {
					t.Fatalf("want progress notification at %d, got %+v", rev, wr)
				}
			case <-time.After(reqTimeout):
				t.Fatal("no progress notification")
			}
		}
	})
}

// TestWatchFragmentBoundaries: a fragmented replay is split exactly where
// etcd splits it (same events per fragment).
func TestWatchFragmentBoundaries(t *testing.T) {
	var shapes []string
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		val := strings.Repeat("x", 100*1024)
		for i := range 25 {
			mustPut(t, c, "big"+strconv.Itoa(100+i), val)
		}
		ws, err := pb.NewWatchClient(c.ActiveConnection()).Watch(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
			Key: []byte("big"), RangeEnd: []byte("bih"), StartRevision: 2, Fragment: true,
		}}}); err != nil {
			t.Fatal(err)
		}
		var shape []string
		for n := 0; n < 25; {
			r, err := ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.Created {
				continue
			}
			n += len(r.Events)
			shape = append(shape, strconv.Itoa(len(r.Events))+map[bool]string{true: "+", false: "."}[r.Fragment])
		}
		if len(shape) < 2 {
			t.Fatalf("not fragmented: %v", shape)
		}
		shapes = append(shapes, strings.Join(shape, " "))
	})
	if len(shapes) == 2 && shapes[0] != shapes[1] {
		t.Fatalf("fragments differ: meshetcd %q, etcd %q", shapes[0], shapes[1])
	}
	t.Logf("fragment shapes: %q", shapes)
}

// TestLockElectionErrors: the Lock and Election services fail like etcd's
// (same gRPC code and message) for an unknown lease, a missing leader key
// and an election without leader.
func TestLockElectionErrors(t *testing.T) {
	var results []string
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		rctx := ctx(t)
		lc := v3lockpb.NewLockClient(c.ActiveConnection())
		ec := v3electionpb.NewElectionClient(c.ActiveConnection())
		var got []string
		record := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Fatalf("%s: no error", what)
			}
			st := status.Convert(err)
			got = append(got, fmt.Sprintf("%s: %s %q", what, st.Code(), st.Message()))
		}
		_, err := lc.Lock(rctx, &v3lockpb.LockRequest{Name: []byte("L"), Lease: 999})
		record("lock with unknown lease", err)
		_, err = ec.Proclaim(rctx, &v3electionpb.ProclaimRequest{Value: []byte("x")})
		record("proclaim without leader key", err)
		_, err = ec.Resign(rctx, &v3electionpb.ResignRequest{})
		record("resign without leader key", err)
		_, err = ec.Leader(rctx, &v3electionpb.LeaderRequest{Name: []byte("nobody")})
		record("leader of empty election", err)
		_, err = ec.Campaign(rctx, &v3electionpb.CampaignRequest{Name: []byte("E"), Lease: 999, Value: []byte("v")})
		record("campaign with unknown lease", err)
		results = append(results, strings.Join(got, "\n"))
		t.Logf("errors:\n%s", results[len(results)-1])
	})
	if len(results) == 2 && results[0] != results[1] {
		t.Fatalf("meshetcd:\n%s\netcd:\n%s", results[0], results[1])
	}
}
