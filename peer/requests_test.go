package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshetcd/meshetcd/mesh"
)

// fakeNet delivers datagrams between endpoints by name, each on its own
// goroutine like the mesh's delivery goroutine; drop makes it lose them.
type fakeNet struct {
	mu       sync.Mutex
	handlers map[mesh.PeerName]mesh.DatagramHandler
	drop     bool
	wg       sync.WaitGroup
}

type fakeSender struct {
	net  *fakeNet
	self mesh.PeerName
}

func (s fakeSender) MaxPayload() int { return 1024 }

func (s fakeSender) Send(dst mesh.PeerName, payload []byte) error {
	s.net.mu.Lock()
	h, ok := s.net.handlers[dst]
	drop := s.net.drop
	s.net.mu.Unlock()
	if !ok {
		return mesh.ErrNoRoute
	}
	if drop {
		return nil
	}
	b := append([]byte(nil), payload...)
	s.net.wg.Add(1)
	go func() {
		defer s.net.wg.Done()
		h(s.self, b)
	}()
	return nil
}

func newEndpoint(t *testing.T, nw *fakeNet, name mesh.PeerName, maxConc int) *Endpoint {
	t.Helper()
	e, err := NewEndpoint(EndpointConfig{MaxConcurrent: maxConc, Open: func(h mesh.DatagramHandler) (sender, error) {
		nw.mu.Lock()
		nw.handlers[name] = h
		nw.mu.Unlock()
		return fakeSender{net: nw, self: name}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); nw.wg.Wait() })
	return e
}

// codedSentinel is a handler error with a wire code.
type codedSentinel struct{ msg string }

func (e codedSentinel) Error() string         { return e.msg }
func (e codedSentinel) PeerErrorCode() uint16 { return 7 }

var errSentinel = codedSentinel{"etcdserver: not leader"}

func TestCallAndErrors(t *testing.T) {
	nw := &fakeNet{handlers: map[mesh.PeerName]mesh.DatagramHandler{}}
	a := newEndpoint(t, nw, "a", 1)
	b := newEndpoint(t, nw, "b", 1)
	release, started := make(chan struct{}), make(chan struct{})
	b.Handle(1, func(ctx context.Context, src mesh.PeerName, req []byte) ([]byte, error) {
		return append([]byte(string(src)+":"), req...), nil
	})
	b.Handle(2, func(context.Context, mesh.PeerName, []byte) ([]byte, error) { return nil, errSentinel })
	b.Handle(3, func(ctx context.Context, _ mesh.PeerName, _ []byte) ([]byte, error) {
		close(started)
		select {
		case <-release:
			return []byte("released"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if got, err := a.Call(ctx, "b", 1, []byte("hi")); err != nil || string(got) != "a:hi" {
		t.Fatalf("Call = %q, %v", got, err)
	}
	_, err := a.Call(ctx, "b", 2, nil)
	var re *RemoteError
	if !errors.As(err, &re) || !errors.Is(err, errSentinel) || re.Peer != "b" {
		t.Fatalf("remote error = %v; want a RemoteError matching the sentinel", err)
	}
	if _, err := a.Call(ctx, "b", 9, nil); !errors.Is(err, ErrNoHandler) {
		t.Fatalf("unknown method: err = %v, want ErrNoHandler", err)
	}
	if _, err := a.Call(ctx, "nobody", 1, nil); !errors.Is(err, mesh.ErrNoRoute) {
		t.Fatalf("unreachable peer: err = %v, want mesh.ErrNoRoute", err)
	}
	if _, err := a.Call(ctx, "b", 1, make([]byte, 2000)); !errors.Is(err, mesh.ErrTooLarge) {
		t.Fatalf("oversized request: err = %v, want mesh.ErrTooLarge", err)
	}

	// One handler slot: a second concurrent request is refused as busy.
	slow := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, "b", 3, nil)
		slow <- err
	}()
	select {
	case <-started:
	case err := <-slow:
		t.Fatalf("slow call returned before its handler started: %v", err)
	case <-ctx.Done():
		t.Fatal("slow handler never started")
	}
	if _, err := a.Call(ctx, "b", 1, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("call while the only handler slot is taken: err = %v, want ErrBusy", err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("slow call: %v", err)
	}

	// Lost datagrams: the call times out with ErrTimeout.
	nw.mu.Lock()
	nw.drop = true
	nw.mu.Unlock()
	tctx, tcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer tcancel()
	if _, err := a.Call(tctx, "b", 1, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("lost request: err = %v, want ErrTimeout", err)
	}
}

func TestGarbageAndClose(t *testing.T) {
	nw := &fakeNet{handlers: map[mesh.PeerName]mesh.DatagramHandler{}}
	a := newEndpoint(t, nw, "a", 4)
	nw.mu.Lock()
	h := nw.handlers["a"]
	nw.mu.Unlock()
	for i := 0; i < 64; i++ {
		h("x", []byte(fmt.Sprintf("%d", i)))                         // short
		h("x", append([]byte{kindResponse, 9}, make([]byte, 20)...)) // unknown id / status
		h("x", append([]byte{kindRequest, 1}, make([]byte, 12)...))  // no handler → answer to x
		h("x", append([]byte{77, 1}, make([]byte, 30)...))           // unknown kind
	}
	done := make(chan error, 1)
	nw.mu.Lock()
	nw.drop = true
	nw.mu.Unlock()
	go func() {
		_, err := a.Call(context.Background(), "a", 1, nil)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call after Close: err = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not fail the pending call")
	}
	if _, err := a.Call(context.Background(), "a", 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: err = %v, want ErrClosed", err)
	}
}

// A caller that sends its next request as soon as the previous answer
// arrives never finds the handler slot taken by its own finished request.
func TestSequentialCallsNeverBusy(t *testing.T) {
	nw := &fakeNet{handlers: map[mesh.PeerName]mesh.DatagramHandler{}}
	a := newEndpoint(t, nw, "a", 1)
	b := newEndpoint(t, nw, "b", 1)
	b.Handle(1, func(context.Context, mesh.PeerName, []byte) ([]byte, error) { return []byte("ok"), nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 3000; i++ {
		if _, err := a.Call(ctx, "b", 1, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// Errors cross the wire as codes: an error with the same text but no (or
// another) code does not match, and an uncoded error carries code 0.
func TestErrorsCrossAsCodes(t *testing.T) {
	nw := &fakeNet{handlers: map[mesh.PeerName]mesh.DatagramHandler{}}
	a := newEndpoint(t, nw, "a", 4)
	b := newEndpoint(t, nw, "b", 4)
	b.Handle(1, func(context.Context, mesh.PeerName, []byte) ([]byte, error) {
		return nil, fmt.Errorf("wrapped: %w", errSentinel)
	})
	b.Handle(2, func(context.Context, mesh.PeerName, []byte) ([]byte, error) {
		return nil, errors.New(errSentinel.Error()) // same text, no code
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Call(ctx, "b", 1, nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != errSentinel.PeerErrorCode() || !errors.Is(err, errSentinel) {
		t.Fatalf("wrapped coded error = %#v; want code %d matching the sentinel", err, errSentinel.PeerErrorCode())
	}
	_, err = a.Call(ctx, "b", 2, nil)
	if !errors.As(err, &re) || re.Code != 0 || errors.Is(err, errSentinel) || err.Error() != errSentinel.Error() {
		t.Fatalf("uncoded error with the sentinel's text = %#v; want code 0, text kept, no match", err)
	}
}
