package meshconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/internal/testutil"
	"github.com/meshetcd/meshetcd/mesh"
)

const bulkChan mesh.ChannelID = 41

// fastBulk is a config with timeouts short enough for tests yet generous
// for a loaded 2-core machine.
func fastBulk(h Handler) BulkConfig {
	return BulkConfig{
		ChunkSize:         16 << 10,
		Window:            8,
		RetransmitTimeout: 20 * time.Millisecond,
		IdleTimeout:       3 * time.Second,
		NoRouteGrace:      300 * time.Millisecond,
		Handler:           h,
	}
}

func newFakeBulk(t *testing.T, n *fakeNet, name mesh.PeerName, cfg BulkConfig) *Bulk {
	t.Helper()
	b, err := newBulk(name, n.opener(name, bulkChan), n.reachable(name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// received is what a test handler saw of one transfer.
type received struct {
	src  mesh.PeerName
	meta []byte
	sum  [32]byte
	n    int64
	err  error
}

// hashingHandler reads each body into a SHA-256 and reports it on out.
func hashingHandler(out chan<- received) Handler {
	return func(ctx context.Context, in *Incoming) error {
		h := sha256.New()
		n, err := io.Copy(h, in.Body)
		r := received{src: in.Src, meta: bytes.Clone(in.Meta), n: n, err: err}
		copy(r.sum[:], h.Sum(nil))
		out <- r
		return err
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestBulkTransferUnderFaults(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	got := make(chan received, 1)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	newFakeBulk(t, n, "b", fastBulk(hashingHandler(got)))
	n.setFaults(0.03, 0.02, 0.02, 0.03)

	body := randomBytes(1, 3<<20+123)
	meta := randomBytes(2, 40<<10) // spans several chunks
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Send(ctx, "b", meta, bytes.NewReader(body)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-got
	if r.err != nil || r.src != "a" || !bytes.Equal(r.meta, meta) || r.n != int64(len(body)) || r.sum != sha256.Sum256(body) {
		t.Fatalf("receiver got src %q, %d meta bytes (equal %v), %d body bytes (hash equal %v), err %v",
			r.src, len(r.meta), bytes.Equal(r.meta, meta), r.n, r.sum == sha256.Sum256(body), r.err)
	}
}

func TestBulkShapes(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	got := make(chan received, 1)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	b := newFakeBulk(t, n, "b", fastBulk(hashingHandler(got)))
	c := b.ChunkSize()
	for _, tc := range []struct{ meta, body int }{
		{0, 0}, {5, 0}, {0, 5}, {c, 0}, {0, c}, {c, c}, {c - 1, 1}, {1, 3 * c}, {3 * c, 2*c + 1},
	} {
		meta, body := randomBytes(3, tc.meta), randomBytes(4, tc.body)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := a.Send(ctx, "b", meta, bytes.NewReader(body))
		cancel()
		if err != nil {
			t.Fatalf("meta %d body %d: Send: %v", tc.meta, tc.body, err)
		}
		r := <-got
		if !bytes.Equal(r.meta, meta) || r.n != int64(tc.body) || r.sum != sha256.Sum256(body) {
			t.Fatalf("meta %d body %d: received meta %d, body %d bytes, hash equal %v", tc.meta, tc.body, len(r.meta), r.n, r.sum == sha256.Sum256(body))
		}
	}
}

func TestBulkRejections(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	newFakeBulk(t, n, "nohandler", fastBulk(nil))
	cfg := fastBulk(func(ctx context.Context, in *Incoming) error {
		if string(in.Meta) == "early" {
			return nil // returns without reading the body
		}
		io.Copy(io.Discard, in.Body)
		return errors.New("snapshot index too old")
	})
	cfg.MaxMetaSize = 100
	newFakeBulk(t, n, "picky", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		dst  mesh.PeerName
		meta string
		want string
	}{
		{"nohandler", "m", "accepts no transfers"},
		{"picky", "m", "snapshot index too old"},
		{"picky", "early", "before reading the whole body"},
		{"picky", strings.Repeat("m", 101), "exceeds 100"},
	} {
		err := a.Send(ctx, tc.dst, []byte(tc.meta), bytes.NewReader(randomBytes(5, 100<<10)))
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Send to %s with meta %.8q: %v; want ErrRejected mentioning %q", tc.dst, tc.meta, err, tc.want)
		}
	}
	if err := a.Send(ctx, "nobody", nil, bytes.NewReader(nil)); !errors.Is(err, mesh.ErrNoRoute) {
		t.Errorf("Send to unknown peer: %v; want mesh.ErrNoRoute", err)
	}
	if err := a.Send(ctx, "a", nil, bytes.NewReader(nil)); !errors.Is(err, ErrBadAddr) {
		t.Errorf("Send to self: %v; want ErrBadAddr", err)
	}
}

// slowReader yields n bytes of src, then blocks until release is closed.
type gatedReader struct {
	r       io.Reader
	n       int
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		g.once.Do(func() { close(g.reached) })
		<-g.release
		return g.r.Read(p)
	}
	p = p[:min(len(p), g.n)]
	n, err := g.r.Read(p)
	g.n -= n
	return n, err
}

func TestBulkReceiverDiesMidway(t *testing.T) {
	for _, visible := range []bool{true, false} {
		t.Run(fmt.Sprintf("routeLost=%v", visible), func(t *testing.T) {
			n := newFakeNet(t, 20<<10)
			got := make(chan received, 1)
			a := newFakeBulk(t, n, "a", fastBulk(nil))
			newFakeBulk(t, n, "b", fastBulk(hashingHandler(got)))
			body := &gatedReader{r: bytes.NewReader(randomBytes(6, 1<<20)), n: 300 << 10, reached: make(chan struct{}), release: make(chan struct{})}
			errc := make(chan error, 1)
			go func() { errc <- a.Send(context.Background(), "b", nil, body) }()
			<-body.reached
			start := time.Now()
			if visible {
				n.kill("b") // the mesh notices: no route
			} else {
				n.mu.Lock() // silent death: datagrams vanish, the route stays
				n.chans[fakeKey{"b", bulkChan}].muted.Store(true)
				n.mu.Unlock()
			}
			close(body.release)
			select {
			case err := <-errc:
				want := ErrIdleTimeout
				if visible {
					want = mesh.ErrNoRoute
				}
				if !errors.Is(err, want) {
					t.Fatalf("Send: %v; want %v", err, want)
				}
				t.Logf("Send failed after %v: %v", time.Since(start), err)
			case <-time.After(20 * time.Second):
				t.Fatal("Send did not fail within 20 s of the receiver's death")
			}
		})
	}
}

func TestBulkSenderDiesMidway(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	dir := t.TempDir()
	handlerErr := make(chan error, 1)
	cfg := fastBulk(SpoolToFile(dir, func(context.Context, mesh.PeerName, []byte, string) error {
		handlerErr <- nil
		return nil
	}))
	newFakeBulk(t, n, "b", cfg)
	for _, how := range []string{"cancel", "vanish"} {
		a, err := newBulk("a-"+mesh.PeerName(how), n.opener("a-"+mesh.PeerName(how), bulkChan), n.reachable("a-"+mesh.PeerName(how)), fastBulk(nil))
		if err != nil {
			t.Fatal(err)
		}
		body := &gatedReader{r: bytes.NewReader(randomBytes(7, 1<<20)), n: 200 << 10, reached: make(chan struct{}), release: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- a.Send(ctx, "b", []byte("meta"), body) }()
		<-body.reached
		testutil.Eventually(t, 5*time.Second, "the spool file", func() bool {
			ents, _ := os.ReadDir(dir)
			return len(ents) == 1
		})
		if how == "cancel" {
			cancel()
		} else {
			n.kill("a-vanish")
			cancel()
		}
		close(body.release)
		// A vanished sender's own Send fails however it likes; the point
		// is the receiver's cleanup.
		if err := <-errc; err == nil || how == "cancel" && !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: Send: %v; want context.Canceled", how, err)
		}
		testutil.Eventually(t, 10*time.Second, how+": spool file removed", func() bool {
			ents, _ := os.ReadDir(dir)
			return len(ents) == 0
		})
		select {
		case <-handlerErr:
			t.Fatalf("%s: SpoolFunc called for an incomplete body", how)
		default:
		}
		a.Close()
	}
}

func TestBulkConcurrentTransfersDoNotMix(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	got := make(chan received, 8)
	cfg := fastBulk(hashingHandler(got))
	cfg.MaxIncoming = 8
	newFakeBulk(t, n, "sink1", cfg)
	newFakeBulk(t, n, "sink2", cfg) // same handler: results must still not mix
	senders := []*Bulk{newFakeBulk(t, n, "a", fastBulk(nil)), newFakeBulk(t, n, "b", fastBulk(nil))}
	n.setFaults(0.01, 0, 0, 0.01)
	want := make(map[string][32]byte)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		s := senders[i%2]
		sink := mesh.PeerName(fmt.Sprintf("sink%d", 1+i/3))
		meta := fmt.Sprintf("%s-%d", s.local, i)
		body := randomBytes(uint64(10+i), 200<<10+i*1000)
		want[meta] = sha256.Sum256(body)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs <- s.Send(ctx, sink, []byte(meta), bytes.NewReader(body))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 6 {
		r := <-got
		if w, ok := want[string(r.meta)]; !ok || w != r.sum || !strings.HasPrefix(string(r.meta), string(r.src)) {
			t.Fatalf("transfer %q from %s arrived mixed up", r.meta, r.src)
		}
		delete(want, string(r.meta))
	}
}

func TestBulkReceiverRestartAbortsSender(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	got := make(chan received, 1)
	b1, err := newBulk("b", n.opener("b", bulkChan), n.reachable("b"), fastBulk(hashingHandler(got)))
	if err != nil {
		t.Fatal(err)
	}
	body := &gatedReader{r: bytes.NewReader(randomBytes(8, 1<<20)), n: 200 << 10, reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- a.Send(context.Background(), "b", nil, body) }()
	<-body.reached
	b1.Close() // tells the sender
	if r := <-got; r.err == nil {
		t.Fatal("handler's Body did not fail on Close")
	}
	close(body.release) // the sender reads the body on its own goroutine
	if err := <-errc; !errors.Is(err, ErrAborted) {
		t.Fatalf("Send after receiver Close: %v; want ErrAborted", err)
	}

	// A receiver that crashes and restarts without a word: the sender
	// learns from its next chunk that the transfer is unknown.
	newFakeBulk(t, n, "b", fastBulk(hashingHandler(got)))
	body = &gatedReader{r: bytes.NewReader(randomBytes(8, 1<<20)), n: 200 << 10, reached: make(chan struct{}), release: make(chan struct{})}
	go func() { errc <- a.Send(context.Background(), "b", nil, body) }()
	<-body.reached
	newFakeBulk(t, n, "b", fastBulk(hashingHandler(got))) // takes over b's traffic
	close(body.release)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "unknown transfer") {
			t.Fatalf("Send after receiver restart: %v; want ErrAborted (unknown transfer)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not notice the receiver's restart")
	}
}

// A slow handler throttles the sender: the receiver never buffers more
// than its window plus one chunk, and the transfer still completes.
func TestBulkFlowControlBoundsReceiverBuffer(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	var rb *Bulk
	var peak uint64
	cfg := fastBulk(func(ctx context.Context, in *Incoming) error {
		buf := make([]byte, 3000)
		for {
			rb.mu.Lock()
			for _, t := range rb.in {
				t.mu.Lock()
				peak = max(peak, t.queued)
				t.mu.Unlock()
			}
			rb.mu.Unlock()
			_, err := in.Body.Read(buf)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			time.Sleep(200 * time.Microsecond)
		}
	})
	cfg.Window = 4
	rb = newFakeBulk(t, n, "b", cfg)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Send(ctx, "b", nil, bytes.NewReader(randomBytes(9, 1<<20))); err != nil {
		t.Fatal(err)
	}
	limit := uint64(cfg.Window*rb.ChunkSize() + a.ChunkSize())
	t.Logf("receiver buffered at most %d bytes (window %d + one chunk = %d)", peak, cfg.Window*rb.ChunkSize(), limit)
	if peak == 0 || peak > limit {
		t.Fatalf("receiver buffered %d bytes; want 0 < peak ≤ %d", peak, limit)
	}
}

func TestBulkCloseReleasesEverything(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	entered := make(chan struct{}, 1)
	cfg := fastBulk(func(ctx context.Context, in *Incoming) error {
		entered <- struct{}{}
		_, err := io.Copy(io.Discard, in.Body) // blocks until Close aborts it
		if err == nil || ctx.Err() == nil {
			return fmt.Errorf("body ended with %v, ctx %v; want both failed", err, ctx.Err())
		}
		return err
	})
	b, err := newBulk("b", n.opener("b", bulkChan), n.reachable("b"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newBulk("a", n.opener("a", bulkChan), n.reachable("a"), fastBulk(nil))
	if err != nil {
		t.Fatal(err)
	}
	body := &gatedReader{r: bytes.NewReader(randomBytes(9, 1<<20)), n: 100 << 10, reached: make(chan struct{}), release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- a.Send(context.Background(), "b", []byte("m"), body) }()
	<-entered
	<-body.reached
	b.Close()
	b.Close()
	close(body.release)
	if err := <-errc; !errors.Is(err, ErrAborted) {
		t.Fatalf("Send: %v; want ErrAborted", err)
	}
	a.Close()
	if err := a.Send(context.Background(), "b", nil, bytes.NewReader(nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send on a closed endpoint: %v; want ErrClosed", err)
	}
	checkNoLeaks(t)
}

func TestSpoolToFile(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	dir, keep := t.TempDir(), t.TempDir()
	body := randomBytes(12, 300<<10)
	var kept string
	newFakeBulk(t, n, "b", fastBulk(SpoolToFile(dir, func(ctx context.Context, src mesh.PeerName, meta []byte, path string) error {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, body) || string(meta) != "m" || src != "a" {
			return fmt.Errorf("spooled file wrong: %d bytes, meta %q, src %s, %v", len(got), meta, src, err)
		}
		if string(meta) == "m" && kept == "" {
			kept = filepath.Join(keep, "snap.db")
			return os.Rename(path, kept) // the first one is kept
		}
		return nil
	})))
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	for range 2 {
		if err := a.Send(context.Background(), "b", []byte("m"), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(kept); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("kept file: %d bytes, %v", len(got), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left in the spool dir", len(ents))
	}
}

// TestBulkBodyReadThenWriteTo: a handler may Read part of the body and
// hand the rest to io.Copy (WriteTo, which writes from the queued chunks
// themselves); the bytes arrive whole and in order, and a writer that
// fails part-way ends the copy with its error and the transfer with the
// handler's.
func TestBulkBodyReadThenWriteTo(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	got := make(chan received, 1)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	b := newFakeBulk(t, n, "b", fastBulk(func(ctx context.Context, in *Incoming) error {
		h := sha256.New()
		head := make([]byte, 1000) // ends inside the first chunk
		k, err := io.ReadFull(in.Body, head)
		h.Write(head[:k])
		var m int64
		if err == nil {
			m, err = io.Copy(h, in.Body)
		}
		r := received{n: int64(k) + m, err: err}
		copy(r.sum[:], h.Sum(nil))
		got <- r
		return err
	}))
	body := randomBytes(5, 5*b.ChunkSize()+77)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Send(ctx, "b", []byte("m"), bytes.NewReader(body)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := <-got; r.err != nil || r.n != int64(len(body)) || r.sum != sha256.Sum256(body) {
		t.Fatalf("handler read %d of %d bytes (hash equal %v), err %v", r.n, len(body), r.sum == sha256.Sum256(body), r.err)
	}

	diskFull := errors.New("no space left on device")
	newFakeBulk(t, n, "c", fastBulk(func(ctx context.Context, in *Incoming) error {
		_, err := io.Copy(&failingWriter{left: 2*b.ChunkSize() + 10, err: diskFull}, in.Body)
		if !errors.Is(err, diskFull) {
			t.Errorf("io.Copy into a failing writer: %v, want %v", err, diskFull)
		}
		return err
	}))
	if err := a.Send(ctx, "c", []byte("m"), bytes.NewReader(body)); err == nil || !strings.Contains(err.Error(), diskFull.Error()) {
		t.Fatalf("Send to a receiver whose writer fails: %v, want the receiver's %q", err, diskFull)
	}
}

// failingWriter accepts left bytes, then fails with err.
type failingWriter struct {
	left int
	err  error
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, w.err
	}
	w.left -= len(p)
	return len(p), nil
}

// TestBulkAbortWhileWriteToWrites: a transfer aborted (here by Close)
// while WriteTo is inside the handler's Write ends the copy with the
// abort's error once that Write returns; the queue it was writing from is
// gone by then.
func TestBulkAbortWhileWriteToWrites(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	writing := make(chan struct{})
	handled := make(chan error, 1)
	b := newFakeBulk(t, n, "b", fastBulk(func(ctx context.Context, in *Incoming) error {
		_, err := io.Copy(&blockingWriter{ctx: ctx, entered: writing}, in.Body)
		handled <- err
		return err
	}))
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	errc := make(chan error, 1)
	go func() {
		errc <- a.Send(context.Background(), "b", []byte("m"), bytes.NewReader(randomBytes(13, 1<<20)))
	}()
	<-writing
	b.Close()
	if err := <-handled; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrAborted) {
		t.Fatalf("io.Copy after the transfer was aborted: %v; want the abort's error", err)
	}
	if err := <-errc; !errors.Is(err, ErrAborted) {
		t.Fatalf("Send: %v; want ErrAborted", err)
	}
}

// blockingWriter's first Write signals entered and returns, successfully,
// only once ctx is done.
type blockingWriter struct {
	ctx     context.Context
	entered chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.ctx.Done()
	return len(p), nil
}

// TestBulkSenderPausedInReadDoesNotResend: a body whose Read blocks for
// many retransmit timeouts (a slow snapshot source) while the receiver
// acknowledged everything sent before it does not make the sender resend:
// it hears the acks that arrived during the Read before judging its
// timeout.
func TestBulkSenderPausedInReadDoesNotResend(t *testing.T) {
	n := newFakeNet(t, 20<<10)
	got := make(chan received, 1)
	a := newFakeBulk(t, n, "a", fastBulk(nil))
	b := newFakeBulk(t, n, "b", fastBulk(hashingHandler(got)))
	body := randomBytes(14, 16*b.ChunkSize())
	gate := &gatedReader{r: bytes.NewReader(body), n: 3 * b.ChunkSize(), reached: make(chan struct{}), release: make(chan struct{})}
	go func() {
		<-gate.reached
		time.Sleep(10 * fastBulk(nil).RetransmitTimeout)
		close(gate.release)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Send(ctx, "b", nil, gate); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if r := <-got; r.n != int64(len(body)) || r.sum != sha256.Sum256(body) {
		t.Fatalf("received %d of %d bytes (hash equal %v)", r.n, len(body), r.sum == sha256.Sum256(body))
	}
	if rw := a.Stats().Rewinds; rw != 0 {
		t.Errorf("sender rewound %d times after a Read that blocked; the receiver had acknowledged everything sent", rw)
	}
}
