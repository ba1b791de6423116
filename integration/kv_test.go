package integration

import (
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// forEachServer runs fn against a fresh meshetcd process, a fresh
// in-process (embed) member and, when an etcd 3.7.3 binary is available, a
// fresh etcd too — which proves the expectations in fn are etcd's
// behaviour, not our guess of it.
func forEachServer(t *testing.T, fn func(t *testing.T, p *Proc)) {
	t.Run("meshetcd", func(t *testing.T) {
		fn(t, StartProc(t, ProcOptions{}))
	})
	t.Run("embedded", func(t *testing.T) {
		_, p := StartEmbedded(t, nil)
		fn(t, p)
	})
	if bins.etcd != "" {
		t.Run("etcd", func(t *testing.T) {
			fn(t, StartProc(t, ProcOptions{Bin: bins.etcd}))
		})
	}
}

func mustPut(t *testing.T, c *clientv3.Client, k, v string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	r, err := c.Put(ctx(t), k, v, opts...)
	if err != nil {
		t.Fatalf("put %q: %v", k, err)
	}
	return r
}

func mustGet(t *testing.T, c *clientv3.Client, k string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	r, err := c.Get(ctx(t), k, opts...)
	if err != nil {
		t.Fatalf("get %q: %v", k, err)
	}
	return r
}

// kvs renders key=value@create/mod/version for compact comparisons.
func kvs(r *clientv3.GetResponse) string {
	var ss []string
	for _, kv := range r.Kvs {
		ss = append(ss, fmt.Sprintf("%s=%s@%d/%d/%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version))
	}
	return strings.Join(ss, " ")
}

func keys(r *clientv3.GetResponse) string {
	var ss []string
	for _, kv := range r.Kvs {
		ss = append(ss, string(kv.Key))
	}
	return strings.Join(ss, ",")
}

func wantErr(t *testing.T, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", msg)
	}
	if err.Error() != msg {
		t.Fatalf("error = %q, want %q", err.Error(), msg)
	}
}

func TestKVRange(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		// Revisions 2..7 (a fresh cluster is at revision 1).
		for i, k := range []string{"a", "b", "c", "foo/1", "foo/2", "foo/3"} {
			if r := mustPut(t, c, k, fmt.Sprint(6-i)); r.Header.Revision != int64(i+2) {
				t.Fatalf("put %s at revision %d, want %d", k, r.Header.Revision, i+2)
			}
		}
		mustPut(t, c, "a", "again") // rev 8: a version 2

		if got := kvs(mustGet(t, c, "a")); got != "a=again@2/8/2" {
			t.Errorf("get a = %s", got)
		}
		r := mustGet(t, c, "foo/", clientv3.WithPrefix())
		if got := kvs(r); got != "foo/1=3@5/5/1 foo/2=2@6/6/1 foo/3=1@7/7/1" || r.Count != 3 || r.More || r.Header.Revision != 8 {
			t.Errorf("prefix foo/ = %s count=%d more=%v rev=%d", got, r.Count, r.More, r.Header.Revision)
		}
		if got := keys(mustGet(t, c, "a", clientv3.WithRange("c"))); got != "a,b" {
			t.Errorf("range [a,c) = %s", got)
		}
		if got := keys(mustGet(t, c, "c", clientv3.WithFromKey())); got != "c,foo/1,foo/2,foo/3" {
			t.Errorf("from key c = %s", got)
		}
		if got := keys(mustGet(t, c, "", clientv3.WithPrefix())); got != "a,b,c,foo/1,foo/2,foo/3" {
			t.Errorf("everything = %s", got)
		}
		r = mustGet(t, c, "foo/", clientv3.WithPrefix(), clientv3.WithLimit(2))
		if keys(r) != "foo/1,foo/2" || !r.More || r.Count != 3 {
			t.Errorf("limit 2 = %s more=%v count=%d", keys(r), r.More, r.Count)
		}
		// Historical reads.
		if got := kvs(mustGet(t, c, "foo/", clientv3.WithPrefix(), clientv3.WithRev(5))); got != "foo/1=3@5/5/1" {
			t.Errorf("prefix foo/ at rev 5 = %s", got)
		}
		if got := kvs(mustGet(t, c, "a", clientv3.WithRev(7))); got != "a=6@2/2/1" {
			t.Errorf("a at rev 7 = %s", got)
		}
		// Sorting.
		for _, tc := range []struct {
			target clientv3.SortTarget
			order  clientv3.SortOrder
			want   string
		}{
			{clientv3.SortByKey, clientv3.SortDescend, "foo/3,foo/2,foo/1,c,b,a"},
			{clientv3.SortByKey, clientv3.SortAscend, "a,b,c,foo/1,foo/2,foo/3"},
			{clientv3.SortByValue, clientv3.SortAscend, "foo/3,foo/2,foo/1,c,b,a"},
			{clientv3.SortByModRevision, clientv3.SortDescend, "a,foo/3,foo/2,foo/1,c,b"},
			{clientv3.SortByCreateRevision, clientv3.SortDescend, "foo/3,foo/2,foo/1,c,b,a"},
			{clientv3.SortByVersion, clientv3.SortDescend, "a,b,c,foo/1,foo/2,foo/3"},
		} {
			got := keys(mustGet(t, c, "", clientv3.WithPrefix(), clientv3.WithSort(tc.target, tc.order)))
			if got != tc.want {
				t.Errorf("sort %v %v = %s, want %s", tc.target, tc.order, got, tc.want)
			}
		}
		// keys_only, count_only.
		r = mustGet(t, c, "foo/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if len(r.Kvs) != 3 || len(r.Kvs[0].Value) != 0 || r.Kvs[0].ModRevision != 5 {
			t.Errorf("keys only = %v", r.Kvs)
		}
		r = mustGet(t, c, "foo/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if len(r.Kvs) != 0 || r.Count != 3 {
			t.Errorf("count only: %d kvs, count %d", len(r.Kvs), r.Count)
		}
		// Revision filters.
		for name, tc := range map[string]struct {
			opts []clientv3.OpOption
			want string
		}{
			"min-mod":    {[]clientv3.OpOption{clientv3.WithMinModRev(6)}, "a,foo/2,foo/3"},
			"max-mod":    {[]clientv3.OpOption{clientv3.WithMaxModRev(4)}, "b,c"},
			"min-create": {[]clientv3.OpOption{clientv3.WithMinCreateRev(6)}, "foo/2,foo/3"},
			"max-create": {[]clientv3.OpOption{clientv3.WithMaxCreateRev(3)}, "a,b"},
		} {
			got := keys(mustGet(t, c, "", append([]clientv3.OpOption{clientv3.WithPrefix()}, tc.opts...)...))
			if got != tc.want {
				t.Errorf("%s = %s, want %s", name, got, tc.want)
			}
		}
		// Serializable reads see the same committed data on one member.
		if got := kvs(mustGet(t, c, "a", clientv3.WithSerializable())); got != "a=again@2/8/2" {
			t.Errorf("serializable get a = %s", got)
		}
		if r := mustGet(t, c, "nope"); len(r.Kvs) != 0 || r.Count != 0 {
			t.Errorf("missing key: %v", r.Kvs)
		}
	})
}

func TestKVPut(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		mustPut(t, c, "k", "v1")
		r := mustPut(t, c, "k", "v2", clientv3.WithPrevKV())
		if r.PrevKv == nil || string(r.PrevKv.Value) != "v1" || r.PrevKv.ModRevision != 2 {
			t.Errorf("prev kv = %v", r.PrevKv)
		}
		if r := mustPut(t, c, "fresh", "x", clientv3.WithPrevKV()); r.PrevKv != nil {
			t.Errorf("prev kv of a new key = %v", r.PrevKv)
		}

		lease, err := c.Grant(ctx(t), 300)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, "leased", "l1", clientv3.WithLease(lease.ID))
		if got := mustGet(t, c, "leased"); got.Kvs[0].Lease != int64(lease.ID) {
			t.Errorf("lease on key = %x, want %x", got.Kvs[0].Lease, lease.ID)
		}
		// ignore_lease keeps the lease, ignore_value keeps the value.
		mustPut(t, c, "leased", "l2", clientv3.WithIgnoreLease())
		mustPut(t, c, "leased", "", clientv3.WithIgnoreValue(), clientv3.WithLease(lease.ID))
		got := mustGet(t, c, "leased")
		if kv := got.Kvs[0]; string(kv.Value) != "l2" || kv.Lease != int64(lease.ID) || kv.Version != 3 {
			t.Errorf("after ignore_lease/ignore_value: value=%q lease=%x version=%d", kv.Value, kv.Lease, kv.Version)
		}
		// ignore_value alone (no lease given) detaches the lease, as in etcd.
		mustPut(t, c, "leased2", "z", clientv3.WithLease(lease.ID))
		mustPut(t, c, "leased2", "", clientv3.WithIgnoreValue())
		if kv := mustGet(t, c, "leased2").Kvs[0]; string(kv.Value) != "z" || kv.Lease != 0 {
			t.Errorf("ignore_value without a lease: value=%q lease=%x", kv.Value, kv.Lease)
		}
		// Revoking the lease deletes its keys.
		if _, err := c.Revoke(ctx(t), lease.ID); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, c, "leased"); len(got.Kvs) != 0 {
			t.Errorf("leased key survived its revoked lease")
		}

		_, err = c.Put(ctx(t), "k", "v", clientv3.WithIgnoreValue())
		wantErr(t, err, "etcdserver: value is provided")
		_, err = c.Put(ctx(t), "k", "", clientv3.WithIgnoreLease(), clientv3.WithLease(7))
		wantErr(t, err, "etcdserver: lease is provided")
		_, err = c.Put(ctx(t), "nokey", "", clientv3.WithIgnoreValue())
		wantErr(t, err, "etcdserver: key not found")
		_, err = c.Put(ctx(t), "k", "v", clientv3.WithLease(0x1234))
		wantErr(t, err, "etcdserver: requested lease not found")
		_, err = c.Put(ctx(t), "", "v")
		wantErr(t, err, "etcdserver: key is not provided")
	})
}

func TestKVDelete(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		for _, k := range []string{"d/1", "d/2", "d/3", "e"} {
			mustPut(t, c, k, "v-"+k)
		}
		r, err := c.Delete(ctx(t), "d/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		if err != nil {
			t.Fatal(err)
		}
		if r.Deleted != 3 || len(r.PrevKvs) != 3 || string(r.PrevKvs[1].Value) != "v-d/2" || r.Header.Revision != 6 {
			t.Errorf("delete prefix: deleted=%d prev=%v rev=%d", r.Deleted, r.PrevKvs, r.Header.Revision)
		}
		// Deleting nothing does not create a revision.
		r, err = c.Delete(ctx(t), "nothing")
		if err != nil || r.Deleted != 0 || r.Header.Revision != 6 {
			t.Errorf("delete missing: %v deleted=%d rev=%d", err, r.Deleted, r.Header.Revision)
		}
		r, err = c.Delete(ctx(t), "e")
		if err != nil || r.Deleted != 1 || len(r.PrevKvs) != 0 {
			t.Errorf("delete e: %v %+v", err, r)
		}
		// Re-creating a deleted key starts a new generation.
		mustPut(t, c, "e", "again")
		if got := kvs(mustGet(t, c, "e")); got != "e=again@8/8/1" {
			t.Errorf("recreated e = %s", got)
		}
	})
}

func TestKVTxn(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		mustPut(t, c, "x", "1")       // rev 2
		mustPut(t, c, "x", "2")       // rev 3, version 2
		mustPut(t, c, "p/a", "alpha") // rev 4
		mustPut(t, c, "p/b", "beta")  // rev 5
		lease, err := c.Grant(ctx(t), 300)
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, c, "leased", "v", clientv3.WithLease(lease.ID)) // rev 6

		for _, tc := range []struct {
			name string
			cmp  clientv3.Cmp
			want bool
		}{
			{"value=", clientv3.Compare(clientv3.Value("x"), "=", "2"), true},
			{"value!=", clientv3.Compare(clientv3.Value("x"), "!=", "2"), false},
			{"value>", clientv3.Compare(clientv3.Value("x"), ">", "1"), true},
			{"value<", clientv3.Compare(clientv3.Value("x"), "<", "1"), false},
			{"version=", clientv3.Compare(clientv3.Version("x"), "=", 2), true},
			{"version-missing=0", clientv3.Compare(clientv3.Version("missing"), "=", 0), true},
			{"create<", clientv3.Compare(clientv3.CreateRevision("x"), "<", 3), true},
			{"create-missing=0", clientv3.Compare(clientv3.CreateRevision("missing"), "=", 0), true},
			{"mod>", clientv3.Compare(clientv3.ModRevision("x"), ">", 3), false},
			{"mod=", clientv3.Compare(clientv3.ModRevision("x"), "=", 3), true},
			{"lease=", clientv3.Compare(clientv3.LeaseValue("leased"), "=", lease.ID), true},
			{"lease-none=0", clientv3.Compare(clientv3.LeaseValue("x"), "=", 0), true},
			{"prefix-value>", clientv3.Compare(clientv3.Value("p/"), ">", "a").WithPrefix(), true},
			{"prefix-value=", clientv3.Compare(clientv3.Value("p/"), "=", "alpha").WithPrefix(), false},
			{"range-version", clientv3.Compare(clientv3.Version("p/a"), "=", 1).WithRange("p/c"), true},
		} {
			r, err := c.Txn(ctx(t)).If(tc.cmp).Then(clientv3.OpGet("x")).Else(clientv3.OpGet("p/a")).Commit()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if r.Succeeded != tc.want {
				t.Errorf("%s: succeeded=%v, want %v", tc.name, r.Succeeded, tc.want)
			}
			wantKey := "p/a"
			if tc.want {
				wantKey = "x"
			}
			if got := string(r.Responses[0].GetResponseRange().Kvs[0].Key); got != wantKey {
				t.Errorf("%s: branch read %s", tc.name, got)
			}
			if r.Header.Revision != 6 {
				t.Errorf("%s: read-only txn moved the revision to %d", tc.name, r.Header.Revision)
			}
		}

		// A write txn with every op kind; one revision for the whole txn.
		r, err := c.Txn(ctx(t)).
			If(clientv3.Compare(clientv3.Value("x"), "=", "2")).
			Then(clientv3.OpPut("x", "3", clientv3.WithPrevKV()), clientv3.OpDelete("p/", clientv3.WithPrefix()), clientv3.OpGet("x"),
				clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Version("nested"), "=", 0)},
					[]clientv3.Op{clientv3.OpPut("nested", "n")},
					[]clientv3.Op{clientv3.OpPut("nested", "else")})).
			Commit()
		if err != nil {
			t.Fatal(err)
		}
		if !r.Succeeded || r.Header.Revision != 7 || len(r.Responses) != 4 {
			t.Fatalf("write txn: succeeded=%v rev=%d responses=%d", r.Succeeded, r.Header.Revision, len(r.Responses))
		}
		if pk := r.Responses[0].GetResponsePut().PrevKv; pk == nil || string(pk.Value) != "2" {
			t.Errorf("txn put prev kv = %v", pk)
		}
		if d := r.Responses[1].GetResponseDeleteRange().Deleted; d != 2 {
			t.Errorf("txn delete deleted %d", d)
		}
		if kv := r.Responses[2].GetResponseRange().Kvs[0]; string(kv.Value) != "3" || kv.ModRevision != 7 {
			t.Errorf("txn get sees %s@%d, want its own write", kv.Value, kv.ModRevision)
		}
		if nt := r.Responses[3].GetResponseTxn(); nt == nil || !nt.Succeeded {
			t.Errorf("nested txn = %v", nt)
		}
		if got := kvs(mustGet(t, c, "nested")); got != "nested=n@7/7/1" {
			t.Errorf("nested = %s", got)
		}
		if got := kvs(mustGet(t, c, "x")); got != "x=3@2/7/3" {
			t.Errorf("x = %s", got)
		}

		// etcd's validation errors.
		_, err = c.Txn(ctx(t)).Then(clientv3.OpPut("dup", "1"), clientv3.OpPut("dup", "2")).Commit()
		wantErr(t, err, "etcdserver: duplicate key given in txn request")
		_, err = c.Txn(ctx(t)).Then(clientv3.OpPut("dup/a", "1"), clientv3.OpDelete("dup/", clientv3.WithPrefix())).Commit()
		wantErr(t, err, "etcdserver: duplicate key given in txn request")
		ops := make([]clientv3.Op, 129)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("many/%d", i), "v")
		}
		_, err = c.Txn(ctx(t)).Then(ops...).Commit()
		wantErr(t, err, "etcdserver: too many operations in txn request")
		_, err = c.Txn(ctx(t)).Then(ops[:128]...).Commit()
		if err != nil {
			t.Errorf("128 ops (the limit) failed: %v", err)
		}
		_, err = c.Txn(ctx(t)).Then(clientv3.OpPut("", "v")).Commit()
		wantErr(t, err, "etcdserver: key is not provided")
	})
}

func TestKVCompact(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		for i := 1; i <= 5; i++ {
			mustPut(t, c, "c", fmt.Sprint(i)) // revs 2..6
		}
		if _, err := c.Compact(ctx(t), 4, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		_, err := c.Get(ctx(t), "c", clientv3.WithRev(3))
		wantErr(t, err, "etcdserver: mvcc: required revision has been compacted")
		if got := kvs(mustGet(t, c, "c", clientv3.WithRev(4))); got != "c=3@2/4/3" {
			t.Errorf("c at compacted rev 4 = %s", got)
		}
		_, err = c.Compact(ctx(t), 4)
		wantErr(t, err, "etcdserver: mvcc: required revision has been compacted")
		_, err = c.Compact(ctx(t), 100)
		wantErr(t, err, "etcdserver: mvcc: required revision is a future revision")
		_, err = c.Get(ctx(t), "c", clientv3.WithRev(100))
		wantErr(t, err, "etcdserver: mvcc: required revision is a future revision")
		// Watch from a compacted revision is told so.
		wc := c.Watch(ctx(t), "c", clientv3.WithRev(2))
		wr := <-wc
		if wr.CompactRevision != 4 {
			t.Errorf("watch from compacted rev: compact revision %d, err %v", wr.CompactRevision, wr.Err())
		}
		// The server keeps serving.
		if r := mustPut(t, c, "c", "after"); r.Header.Revision != 7 {
			t.Errorf("put after compaction at rev %d", r.Header.Revision)
		}
	})
}

func TestBadInputKeepsServing(t *testing.T) {
	forEachServer(t, func(t *testing.T, p *Proc) {
		c := p.Client(t)
		big := strings.Repeat("x", 1572864+10) // just over --max-request-bytes
		_, err := c.Put(ctx(t), "big", big)
		wantErr(t, err, "etcdserver: request is too large")
		_, err = c.Put(ctx(t), "", "v")
		wantErr(t, err, "etcdserver: key is not provided")
		_, err = c.Get(ctx(t), "k", clientv3.WithRev(1000))
		wantErr(t, err, "etcdserver: mvcc: required revision is a future revision")
		_, err = c.Delete(ctx(t), "")
		wantErr(t, err, "etcdserver: key is not provided")
		// A value just under the limit is fine.
		if _, err := c.Put(ctx(t), "almost", strings.Repeat("y", 1500000)); err != nil {
			t.Errorf("1.5 MB put: %v", err)
		}
		if r := mustGet(t, c, "almost", clientv3.WithKeysOnly()); len(r.Kvs) != 1 || r.Kvs[0].Version != 1 {
			t.Errorf("almost-limit value not stored")
		}
	})
}

// TestLimitFlags checks that --max-request-bytes, --max-txn-ops and
// --quota-backend-bytes reach the server, with etcd's errors, and that a
// member out of space still serves reads and deletes (etcd's NOSPACE).
func TestLimitFlags(t *testing.T) {
	args := []string{"--max-request-bytes=10000", "--max-txn-ops=4", "--quota-backend-bytes=300000"}
	servers := map[string]string{"meshetcd": bins.meshetcd}
	if bins.etcd != "" {
		servers["etcd"] = bins.etcd
	}
	for name, bin := range servers {
		t.Run(name, func(t *testing.T) {
			p := StartProc(t, ProcOptions{Bin: bin, Args: args})
			c := p.Client(t)
			_, err := c.Put(ctx(t), "big", strings.Repeat("x", 11000))
			wantErr(t, err, "etcdserver: request is too large")
			ops := []clientv3.Op{clientv3.OpPut("t1", "v"), clientv3.OpPut("t2", "v"), clientv3.OpPut("t3", "v"), clientv3.OpPut("t4", "v"), clientv3.OpPut("t5", "v")}
			_, err = c.Txn(ctx(t)).Then(ops...).Commit()
			wantErr(t, err, "etcdserver: too many operations in txn request")
			if _, err := c.Txn(ctx(t)).Then(ops[:4]...).Commit(); err != nil {
				t.Fatalf("4 ops: %v", err)
			}
			// Fill the backend past the quota.
			var nospace error
			for i := 0; i < 2000 && nospace == nil; i++ {
				_, nospace = c.Put(ctx(t), fmt.Sprintf("fill/%04d", i), strings.Repeat("f", 9000))
			}
			wantErr(t, nospace, "etcdserver: mvcc: database space exceeded")
			out := p.MustCtl(t, "alarm", "list")
			if !strings.Contains(out, "alarm:NOSPACE") {
				t.Errorf("alarm list = %q, want NOSPACE", out)
			}
			if r := mustGet(t, c, "fill/", clientv3.WithPrefix(), clientv3.WithCountOnly()); r.Count == 0 {
				t.Errorf("reads fail under NOSPACE")
			}
			if _, err := c.Delete(ctx(t), "fill/", clientv3.WithPrefix()); err != nil {
				t.Errorf("delete under NOSPACE: %v", err)
			}
		})
	}
}
