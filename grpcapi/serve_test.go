package grpcapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// waitGoroutines waits until the goroutine count drops to at most n; gRPC
// and net/http finish some connection goroutines just after returning.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		got := runtime.NumGoroutine()
		if got <= n {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want <= %d:\n%s", got, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// minimalServers is a gRPC server with only the health service and a
// trivial HTTP handler: Serve's mechanics without a store.
func minimalServers() (*grpc.Server, http.Handler) {
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	return gs, h
}

func TestServeSharesPortAndStopsCleanly(t *testing.T) {
	base := runtime.NumGoroutine()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	gs, h := minimalServers()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, gs, h) }()

	// gRPC and HTTP on the same port.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), testTimeout)
	defer ccancel()
	hr, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health: %v %v", err, hr)
	}
	// A long-lived stream must not hold up shutdown past the grace period.
	wst, err := healthpb.NewHealthClient(conn).Watch(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wst.Recv(); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: testTimeout, Transport: &http.Transport{}}
	resp, err := hc.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" {
		t.Fatalf("http: %q", b)
	}
	// A client that connects and never speaks: cmux is still sniffing it
	// when we shut down, and Serve must not wait for it forever.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	cancelAndWaitClosed(t, "Serve", cancel, done, addr)
	// And nothing Serve started is left running once clients are gone.
	conn.Close()
	hc.CloseIdleConnections()
	idle.Close()
	waitGoroutines(t, base)
}

// failingListener accepts nothing: Accept fails permanently.
type failingListener struct {
	net.Listener
}

func (f *failingListener) Accept() (net.Conn, error) {
	return nil, errors.New("accept: boom")
}

func TestServeReturnsListenerError(t *testing.T) {
	base := runtime.NumGoroutine()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, h := minimalServers()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), &failingListener{Listener: l}, gs, h) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("Serve = %v, want the accept error", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return on listener failure")
	}
	waitGoroutines(t, base)
}

func TestServeCancelledBeforeStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, h := minimalServers()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, gs, h) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
}

// TestStreamRequiringLeaderIsCancelled: a stream opened with hasleader
// ends once the member has had no leader for three election timeouts
// (etcd's rule), and is left alone while there is one.
func TestStreamRequiringLeaderIsCancelled(t *testing.T) {
	f := newFakeStore(t)
	const election = 50 * time.Millisecond
	addr := serveForTest(t, f, Config{ElectionTimeout: election})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(testCtx(t), rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	st, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Status updates (NOT_SERVING, then SERVING once the store is ready)
	// may arrive at any time; only the end of the stream matters.
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	// With a leader the stream survives many election timeouts.
	select {
	case err := <-ended:
		t.Fatalf("stream ended while there was a leader: %v", err)
	case <-time.After(10 * election):
	}
	f.leader.Store(0)
	select {
	case <-ended:
	case <-time.After(testTimeout):
		t.Fatal("stream not cancelled after losing the leader")
	}
	// New streams are refused outright.
	st, err = healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = st.Recv()
	}
	wantWireError(t, "new stream without leader", err, rpctypes.ErrGRPCNoLeader)
}

// cancelAndWaitClosed cancels a running Serve or ServeTLS (named what) and
// checks that it returns without error within the shutdown grace period
// and that its port is closed.
func cancelAndWaitClosed(t *testing.T, what string, cancel func(), done <-chan error, addr string) {
	t.Helper()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s after cancel: %v", what, err)
		}
	case <-time.After(testTimeout):
		t.Fatalf("%s did not return after cancel", what)
	}
	if took := time.Since(start); took > shutdownGrace+10*time.Second {
		t.Fatalf("shutdown took %v", took)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("listener still accepting after %s returned", what)
	}
}
