package integration

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A concurrent put/get workload whose history is checked for
// linearizability with porcupine (a register per key), and a check that no
// acknowledged write is lost (final linearizable reads through every
// member are part of the history, and replicas hash equal).

type kvInput struct {
	Put   bool
	Key   string
	Value string // put: the unique value written
}

type kvOutput struct {
	Value   string // get: the value read ("" when absent)
	Unknown bool   // put whose outcome is unknown (error/timeout)
}

// kvModel is a per-key register. A put of unknown outcome has no return
// time (math.MaxInt64), so it may take effect at any point after its call
// or never (linearized after everything else).
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(kvInput), output.(kvOutput)
		if in.Put {
			return true, in.Value
		}
		return out.Value == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.Put {
			if out.Unknown {
				return fmt.Sprintf("put(%s, %s) -> ?", in.Key, in.Value)
			}
			return fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.Key, out.Value)
	},
}

// history records operations; timestamps are nanoseconds since start on
// the monotonic clock.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// workload drives concurrent puts and gets against a cluster.
type workload struct {
	t       testing.TB
	c       *Cluster
	h       *history
	keys    int
	prefix  string // keys are <prefix>k<i>: a fresh prefix is a fresh register set
	stop    chan struct{}
	wg      sync.WaitGroup
	putsOK  atomic.Int64
	putsUnk atomic.Int64
	getsOK  atomic.Int64
	getsErr atomic.Int64
	notSent atomic.Int64
	// maxLat is the longest successful operation (ns).
	maxLat atomic.Int64
	// acked are the acknowledged puts with the revision they were given,
	// for the no-lost-ack check.
	ackMu sync.Mutex
	acked []ackedPut
}

type ackedPut struct {
	key, value string
	rev        int64
}

// startWorkload starts n workers. Worker i uses a client bound to member
// i%size alone: a round-robin client would make every worker wait on an
// unreachable member for a third of its requests, and a bound client is
// what the product promises to serve.
func startWorkload(t testing.TB, c *Cluster, n, keys int, opTimeout time.Duration) *workload {
	return startWorkloadOn(t, c, "lin/", n, keys, opTimeout)
}

// startWorkloadOn is startWorkload on the keys under prefix: a history
// starts from empty registers, so a second workload on the same cluster
// needs a prefix of its own.
func startWorkloadOn(t testing.TB, c *Cluster, prefix string, n, keys int, opTimeout time.Duration) *workload {
	w := &workload{t: t, c: c, h: &history{start: time.Now()}, keys: keys, prefix: prefix, stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		cli := c.clientCfg(t, clientv3.Config{DialTimeout: 2 * time.Second, DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second}, i%len(c.Members))
		w.wg.Add(1)
		go w.worker(i, cli, opTimeout)
	}
	t.Cleanup(w.Stop)
	return w
}

func (w *workload) worker(id int, cli *clientv3.Client, opTimeout time.Duration) {
	defer w.wg.Done()
	rng := rand.New(rand.NewSource(int64(id) + time.Now().UnixNano()))
	for seq := 0; ; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		key := fmt.Sprintf("%sk%d", w.prefix, rng.Intn(w.keys))
		in := kvInput{Key: key}
		if rng.Intn(2) == 0 {
			in.Put, in.Value = true, fmt.Sprintf("w%d-%d", id, seq)
		}
		cctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		call := w.h.now()
		var out kvOutput
		var err error
		if in.Put {
			var resp *clientv3.PutResponse
			resp, err = cli.Put(cctx, in.Key, in.Value)
			if err == nil {
				w.ackMu.Lock()
				w.acked = append(w.acked, ackedPut{in.Key, in.Value, resp.Header.Revision})
				w.ackMu.Unlock()
			}
		} else {
			var resp *clientv3.GetResponse
			resp, err = cli.Get(cctx, in.Key)
			if err == nil && len(resp.Kvs) > 0 {
				out.Value = string(resp.Kvs[0].Value)
			}
		}
		ret := w.h.now()
		cancel()
		switch {
		case err == nil:
			if in.Put {
				w.putsOK.Add(1)
			} else {
				w.getsOK.Add(1)
			}
			if d := ret - call; d > w.maxLat.Load() {
				w.maxLat.Store(d)
			}
			w.h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
		case notSent(err):
			// The connection could not be established: the request never
			// left the client, so it certainly had no effect.
			w.notSent.Add(1)
		case in.Put:
			// Unknown outcome: it may or may not have been applied.
			w.putsUnk.Add(1)
			w.h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: kvOutput{Unknown: true}, Return: math.MaxInt64})
		default:
			w.getsErr.Add(1) // a failed read constrains nothing
		}
		if err != nil {
			// Back off so a refused connection does not spin.
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// Stop stops the workers and waits for them. Idempotent.
func (w *workload) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// Progress returns the number of acknowledged operations so far.
func (w *workload) Progress() int64 { return w.putsOK.Load() + w.getsOK.Load() }

// WaitProgress waits until at least n more operations were acknowledged.
func (w *workload) WaitProgress(t testing.TB, n int64) {
	t.Helper()
	target := w.Progress() + n
	deadline := time.Now().Add(readyTimeout)
	for w.Progress() < target {
		if time.Now().After(deadline) {
			t.Fatalf("workload made no progress: %d of %d ops in %v", w.Progress(), target, readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Check stops the workload, waits until the cluster is healthy, reads every
// key linearizably through every running member (adding those reads to the
// history), checks the history with porcupine, checks that every
// acknowledged put is in the store at its revision, and compares replica
// hashes. It returns porcupine's verdict (Ok or Unknown; Illegal fails).
func (w *workload) Check(t testing.TB) porcupine.CheckResult {
	t.Helper()
	w.Stop()
	w.c.WaitHealthy(t)
	for i, m := range w.c.Members {
		if !m.running() {
			continue
		}
		cli := w.c.statusClient(i)
		for k := 0; k < w.keys; k++ {
			key := fmt.Sprintf("%sk%d", w.prefix, k)
			call := w.h.now()
			resp, err := cli.Get(ctx(t), key)
			if err != nil {
				t.Fatalf("final read of %s via %s: %v", key, m.Name, err)
			}
			out := kvOutput{}
			if len(resp.Kvs) > 0 {
				out.Value = string(resp.Kvs[0].Value)
			}
			w.h.add(porcupine.Operation{ClientId: 1000 + i, Input: kvInput{Key: key}, Call: call, Output: out, Return: w.h.now()})
		}
	}
	t.Logf("history: %d puts acknowledged, %d puts of unknown outcome, %d gets, %d failed gets, %d requests not sent (no connection), longest acknowledged op %v",
		w.putsOK.Load(), w.putsUnk.Load(), w.getsOK.Load(), w.getsErr.Load(), w.notSent.Load(), time.Duration(w.maxLat.Load()).Round(time.Millisecond))
	if w.putsOK.Load() == 0 || w.getsOK.Load() == 0 {
		t.Fatalf("workload acknowledged no puts or no gets")
	}
	checkTimeout := 2 * time.Minute
	if soak() {
		checkTimeout = 10 * time.Minute
	}
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, w.h.ops, checkTimeout)
	t.Logf("porcupine: %v over %d operations in %v", res, len(w.h.ops), time.Since(begin).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		f := filepath.Join(os.TempDir(), fmt.Sprintf("meshetcd-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(kvModel, info, f); err == nil {
			t.Errorf("visualization: %s", f)
		}
		t.Fatalf("history is not linearizable")
	case porcupine.Unknown:
		t.Logf("porcupine timed out after %v: linearizability not decided (not a failure)", checkTimeout)
	}
	w.checkNoLostAcks(t)
	w.c.checkHashes(t)
	return res
}

// checkNoLostAcks reads every acknowledged put back at the revision it was
// acknowledged with: the key must hold exactly that value, created or
// modified at exactly that revision (the workload never compacts).
func (w *workload) checkNoLostAcks(t testing.TB) {
	t.Helper()
	w.ackMu.Lock()
	acked := slices.Clone(w.acked)
	w.ackMu.Unlock()
	cli := w.c.Client(t)
	var lost atomic.Int64
	var wg sync.WaitGroup
	const readers = 8
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := r; i < len(acked); i += readers {
				a := acked[i]
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := cli.Get(cctx, a.key, clientv3.WithRev(a.rev))
				cancel()
				switch {
				case err != nil:
					t.Errorf("reading acknowledged put %s=%s back at revision %d: %v", a.key, a.value, a.rev, err)
					lost.Add(1)
				case len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.value || resp.Kvs[0].ModRevision != a.rev:
					t.Errorf("acknowledged put %s=%s at revision %d lost: the store has %v at that revision", a.key, a.value, a.rev, resp.Kvs)
					lost.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("no-lost-ack check: %d acknowledged puts, %d lost", len(acked), lost.Load())
}

// checkHashes waits until every running member has applied the current
// revision and compares their HashKV at it: replicas must be identical.
func (c *Cluster) checkHashes(t testing.TB) {
	t.Helper()
	resp, err := c.Client(t).Get(ctx(t), "hash-probe")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	rev := resp.Header.Revision
	hashes := map[string]uint32{}
	deadline := time.Now().Add(readyTimeout)
	for i, m := range c.Members {
		if !m.running() {
			continue
		}
		for {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			h, err := c.statusClient(i).HashKV(cctx, c.Endpoints(i)[0], rev)
			cancel()
			if err == nil {
				hashes[m.Name] = h.Hash
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("HashKV(%d) via %s: %v", rev, m.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var first uint32
	var set bool
	for _, h := range hashes {
		if set && h != first {
			t.Fatalf("replicas differ at revision %d: %v", rev, hashes)
		}
		first, set = h, true
	}
	t.Logf("replicas agree at revision %d (%d members)", rev, len(hashes))
}

// describe renders a short list of member names for logs.
func (c *Cluster) describe(idx ...int) string {
	var s []string
	for _, i := range idx {
		s = append(s, c.Members[i].Name)
	}
	return strings.Join(s, ",")
}

// notSent reports an error that gRPC returns when no connection to the
// endpoint could be made, before anything was sent.
func notSent(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "Error while dialing") || strings.Contains(m, "connection refused")
}
