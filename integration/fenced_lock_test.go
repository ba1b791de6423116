package integration

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/meshetcd/meshetcd/embed"
)

// Fenced locks, Jepsen style. Workers, each with a client bound to one
// member, take a concurrency.Mutex on a 2 s session and add an element to a
// shared set (one key holding a list: a read-modify-write). The fencing
// token is the lock key's create revision. The resource (the keys "fence"
// and "set" in meshetcd) checks it on every access:
//
//	claim: txn if fence < token then fence = token, get set
//	write: txn if fence == token then set = set + element@token
//
// so a holder that lost the lock without knowing (paused past its TTL, cut
// off, its member killed) can no longer write once a newer holder claimed
// the resource. Faults aimed at the current holder: its goroutine blocked
// past the TTL between read and write, its member's links all cut or only
// the direct one to the leader, its member SIGSTOPped or killed (process
// cluster), leadership moved. Checks: every acknowledged add is in the set,
// and the tokens in the set (the order the resource accepted writes in)
// strictly increase.
//
// The unfenced variant (get set; put set+element under the lock) runs the
// same faults and only reports: a holder paused past its TTL overwrites its
// successor's adds, as etcd documents for locks without fencing.

const (
	lockTTL     = 2 // seconds: the session TTL
	fenceKey    = "fenced/fence"
	setKey      = "fenced/set"
	lockPrefix  = "fenced/lock"
	lockPauseP  = 4 // a holder blocks past its TTL in 1 of lockPauseP holds
	lockOpLimit = 5 * time.Second
)

func lockDuration() time.Duration {
	if soak() {
		return 3 * time.Minute
	}
	return 15 * time.Second
}

// lockFault is a fault aimed at the member the current holder uses; it
// returns the function that undoes it.
type lockFault struct {
	name  string
	apply func(holder, leader int) (undo func())
}

type lockRun struct {
	c      *Cluster
	fenced bool
	stop   chan struct{}
	wg     sync.WaitGroup
	holder atomic.Int64 // member of the current holder, -1 when none

	mu       sync.Mutex
	acked    map[string]int64 // element -> token, acknowledged adds
	holds    int
	rejected int // fenced writes refused by the resource (stale holder)
	pauses   int
	unknown  int // writes with an unknown outcome
}

func tokenString(tok int64) string { return fmt.Sprintf("%020d", tok) }

// runLockTest runs workers and the fault driver for lockDuration and
// checks (fenced) or reports (unfenced) the outcome.
func runLockTest(t *testing.T, c *Cluster, fenced bool, faults []lockFault, seed int64) {
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	seedCli := c.Client(t)
	if _, err := seedCli.Txn(ctx(t)).Then(clientv3.OpPut(fenceKey, tokenString(0)), clientv3.OpPut(setKey, "")).Commit(); err != nil {
		t.Fatalf("initialising the resource: %v", err)
	}
	r := &lockRun{c: c, fenced: fenced, stop: make(chan struct{}), acked: map[string]int64{}}
	r.holder.Store(-1)
	for i := 0; i < 2*len(c.Members); i++ {
		cli := c.clientCfg(t, clientv3.Config{DialTimeout: 2 * time.Second, DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second}, i%len(c.Members))
		r.wg.Add(1)
		go r.worker(i, i%len(c.Members), cli, rng.Int63())
	}
	stopped := false
	stopWorkers := func() {
		if !stopped {
			stopped = true
			close(r.stop)
			r.wg.Wait()
		}
	}
	t.Cleanup(stopWorkers)

	var applied []string
	end := time.Now().Add(lockDuration())
	for time.Now().Before(end) {
		time.Sleep(500*time.Millisecond + time.Duration(rng.Int63n(int64(time.Second)))) // between faults
		l := c.WaitLeader(t)
		h := int(r.holder.Load())
		if h < 0 {
			h = rng.Intn(len(c.Members))
		}
		f := faults[rng.Intn(len(faults))]
		applied = append(applied, fmt.Sprintf("%s(m%d, leader m%d)", f.name, h, l))
		undo := f.apply(h, l)
		time.Sleep(time.Duration(lockTTL)*time.Second + 500*time.Millisecond) // past the TTL
		undo()
		c.WaitHealthy(t)
	}
	stopWorkers()
	c.WaitHealthy(t)

	resp, err := c.Client(t).Get(ctx(t), setKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the set: %v %v", resp, err)
	}
	present := map[string]bool{}
	var lastTok int64
	var outOfOrder int
	for _, e := range strings.Split(string(resp.Kvs[0].Value), ",") {
		if e == "" {
			continue
		}
		el, tokS, _ := strings.Cut(e, "@")
		tok, _ := strconv.ParseInt(tokS, 10, 64)
		present[el] = true
		if tok <= lastTok {
			outOfOrder++
		}
		lastTok = tok
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost []string
	for el := range r.acked {
		if !present[el] {
			lost = append(lost, el)
		}
	}
	kind := "fenced"
	if !fenced {
		kind = "unfenced"
	}
	t.Logf("%s, %s: %d lock holds, %d acknowledged adds, %d lost, %d adds in the set, %d out of token order, %d stale writes refused by the fence, %d holder pauses past the TTL, %d writes of unknown outcome; faults: %s",
		c.kind(), kind, r.holds, len(r.acked), len(lost), len(present), outOfOrder, r.rejected, r.pauses, r.unknown, strings.Join(applied, " "))
	if r.holds == 0 || len(r.acked) == 0 {
		t.Fatalf("no lock was taken or no add acknowledged")
	}
	if fenced {
		if len(lost) > 0 {
			t.Errorf("%d acknowledged adds lost: %v", len(lost), lost)
		}
		if outOfOrder > 0 {
			t.Errorf("%d writes accepted out of token order", outOfOrder)
		}
	}
}

// worker takes the lock over and over, adding one element per hold.
func (r *lockRun) worker(id, member int, cli *clientv3.Client, seed int64) {
	defer r.wg.Done()
	rng := rand.New(rand.NewSource(seed))
	for seq := 0; ; seq++ {
		select {
		case <-r.stop:
			return
		default:
		}
		if !r.hold(id, member, seq, cli, rng) {
			select {
			case <-r.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// hold takes the lock once, adds an element and unlocks. It reports
// whether it got the lock.
func (r *lockRun) hold(id, member, seq int, cli *clientv3.Client, rng *rand.Rand) bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(lockTTL), concurrency.WithContext(ctx))
	if err != nil {
		return false
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, lockPrefix)
	lctx, lcancel := context.WithTimeout(ctx, lockOpLimit)
	err = mu.Lock(lctx)
	lcancel()
	if err != nil {
		return false
	}
	r.holder.Store(int64(member))
	defer r.holder.CompareAndSwap(int64(member), -1)
	op := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, lockOpLimit) }

	// The fencing token: the lock key's create revision.
	octx, ocancel := op()
	kresp, err := cli.Get(octx, mu.Key())
	ocancel()
	if err != nil || len(kresp.Kvs) == 0 {
		return true // the lock is already gone
	}
	tok := kresp.Kvs[0].CreateRevision
	r.mu.Lock()
	r.holds++
	r.mu.Unlock()

	var set string
	octx, ocancel = op()
	if r.fenced {
		tresp, err := cli.Txn(octx).If(clientv3.Compare(clientv3.Value(fenceKey), "<", tokenString(tok))).
			Then(clientv3.OpPut(fenceKey, tokenString(tok)), clientv3.OpGet(setKey)).Commit()
		ocancel()
		if err != nil || !tresp.Succeeded {
			return true // a newer holder claimed the resource, or unknown
		}
		if kvs := tresp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
			set = string(kvs[0].Value)
		}
	} else {
		gresp, err := cli.Get(octx, setKey)
		ocancel()
		if err != nil {
			return true
		}
		if len(gresp.Kvs) == 1 {
			set = string(gresp.Kvs[0].Value)
		}
	}
	if rng.Intn(lockPauseP) == 0 {
		// The holder stalls (a GC pause, a swapped-out process) past its
		// session's TTL: the lock expires and someone else takes it.
		r.mu.Lock()
		r.pauses++
		r.mu.Unlock()
		select {
		case <-time.After(time.Duration(lockTTL)*time.Second + time.Second):
		case <-r.stop:
			return true
		}
	}
	el := fmt.Sprintf("w%d-%d", id, seq)
	next := set + "," + el + "@" + strconv.FormatInt(tok, 10)
	octx, ocancel = op()
	var ok bool
	if r.fenced {
		tresp, werr := cli.Txn(octx).If(clientv3.Compare(clientv3.Value(fenceKey), "=", tokenString(tok))).
			Then(clientv3.OpPut(setKey, next)).Commit()
		err = werr
		ok = werr == nil && tresp.Succeeded
		if werr == nil && !tresp.Succeeded {
			r.mu.Lock()
			r.rejected++
			r.mu.Unlock()
		}
	} else {
		_, err = cli.Put(octx, setKey, next)
		ok = err == nil
	}
	ocancel()
	r.mu.Lock()
	if ok {
		r.acked[el] = tok
	} else if err != nil {
		r.unknown++
	}
	r.mu.Unlock()
	uctx, ucancel := op()
	_ = mu.Unlock(uctx)
	ucancel()
	return true
}

// Embedded cluster (embed.StartCluster on the in-memory network): holder
// pauses, holder-side cuts (all routes; the direct link to the leader
// only), leader moves.
func TestFencedLockEmbedded(t *testing.T) {
	for _, fenced := range []bool{true, false} {
		name := map[bool]string{true: "fenced", false: "unfenced"}[fenced]
		t.Run(name, func(t *testing.T) {
			ec, c := startInProcess(t, 3, embed.ClusterOptions{})
			c.WaitHealthy(t)
			runLockTest(t, c, fenced, embeddedLockFaults(t, ec, c), time.Now().UnixNano())
		})
	}
}

func embeddedLockFaults(t *testing.T, ec *embed.Cluster, c *Cluster) []lockFault {
	others := func(h int) []int {
		var o []int
		for i := range c.Members {
			if i != h {
				o = append(o, i)
			}
		}
		return o
	}
	return []lockFault{
		{"isolate-holder", func(h, _ int) func() { ec.Partition([]int{h}, others(h)); return ec.HealAll }},
		{"cut-holder-leader-link", func(h, l int) func() {
			if h == l {
				l = (h + 1) % len(c.Members)
			}
			ec.Cut(h, l)
			return ec.HealAll
		}},
		{"move-leader", func(_, l int) func() { makeLeader(t, c, (l+1)%len(c.Members)); return func() {} }},
		{"none", func(int, int) func() { return func() {} }}, // holder pauses alone
	}
}

// Process cluster in namespaces: the embedded faults plus the holder's
// member SIGSTOPped and killed (and restarted).
func TestFencedLockProcesses(t *testing.T) {
	requireNetns(t)
	for _, fenced := range []bool{true, false} {
		name := map[bool]string{true: "fenced", false: "unfenced"}[fenced]
		t.Run(name, func(t *testing.T) {
			lab := NewNetLab(t, 3)
			c := StartCluster(t, ClusterOptions{Lab: lab})
			c.WaitHealthy(t)
			faults := []lockFault{
				{"isolate-holder", func(h, _ int) func() { lab.Isolate(h); return lab.HealAll }},
				{"cut-holder-leader-link", func(h, l int) func() {
					if h == l {
						l = (h + 1) % len(c.Members)
					}
					lab.Cut(h, l)
					return lab.HealAll
				}},
				{"sigstop-holder-member", func(h, _ int) func() { c.Pause(h); return func() { c.Resume(h) } }},
				{"kill-holder-member", func(h, _ int) func() { c.Kill(h); return func() { c.Restart(h) } }},
				{"move-leader", func(_, l int) func() { makeLeader(t, c, (l+1)%len(c.Members)); return func() {} }},
			}
			runLockTest(t, c, fenced, faults, time.Now().UnixNano())
		})
	}
}
