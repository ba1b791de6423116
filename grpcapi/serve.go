package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/soheilhy/cmux"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"google.golang.org/grpc"
)

// shutdownGrace bounds how long Serve waits for in-flight requests and open
// streams (watches, keepalives) when ctx ends before cutting them off.
const shutdownGrace = 2 * time.Second

// Serve serves gRPC and HTTP on one listener, like etcd's client port:
// HTTP/2 connections whose first request has content-type application/grpc*
// go to gs (natively, not through net/http), everything else to an
// http.Server with handler h.
//
// It returns nil once ctx is cancelled, or the first error if the listener
// (or a server) fails. Either way it closes l, stops gs (gracefully for up to
// two seconds, then hard) and the HTTP server, and waits for every goroutine
// it started before returning.
//
// gs belongs to this call: give each listener its own gRPC server, as etcd
// does, or one listener's failure stops the others' gRPC traffic too. The
// HTTP handler can be shared.
func Serve(ctx context.Context, l net.Listener, gs *grpc.Server, h http.Handler) error {
	tl := newTrackingListener(l)
	m := cmux.New(tl)
	grpcL := m.MatchWithWriters(cmux.HTTP2MatchHeaderFieldPrefixSendSettings("content-type", "application/grpc"))
	httpL := m.Match(cmux.Any())
	srv := newHTTPServer(h)
	return serve(ctx, tl, gs, srv, func(run func(func() error)) {
		run(func() error { return gs.Serve(grpcL) })
		run(func() error { return srv.Serve(httpL) })
		run(m.Serve)
	}, m.Close)
}

// ServeTLS is Serve for an https:// client URL, as etcd's embed/serve.go
// serves one: every connection is a TLS connection handshaken by etcd's
// transport.NewTLSListener (certificates re-read on each handshake, so
// replacing the files rotates them; client certificates checked against
// tlsInfo's CA, CRL and allowed hostnames), and one HTTP/2-capable
// http.Server answers it, handing gRPC requests to gs through
// grpc.Server.ServeHTTP and everything else to h. gRPC calls thereby see
// the client's verified certificate (for --client-cert-auth user names).
//
// maxConcurrentStreams is etcd's --max-concurrent-streams for the HTTP/2
// server (net/http would otherwise cap a connection at 250 streams).
func ServeTLS(ctx context.Context, l net.Listener, gs *grpc.Server, h http.Handler, tlsInfo *transport.TLSInfo, maxConcurrentStreams uint32) error {
	tlsCfg, err := tlsInfo.ServerConfig()
	if err != nil {
		l.Close()
		return fmt.Errorf("grpcapi: client TLS configuration: %w", err)
	}
	tl := newTrackingListener(l)
	tlsL, err := transport.NewTLSListener(tl, tlsInfo)
	if err != nil {
		tl.Close()
		return fmt.Errorf("grpcapi: client TLS listener: %w", err)
	}
	srv := newHTTPServer(grpcHandlerFunc(gs, h))
	srv.TLSConfig = tlsCfg
	srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(min(maxConcurrentStreams, math.MaxInt32))}
	return serve(ctx, tl, gs, srv, func(run func(func() error)) {
		run(func() error { return srv.Serve(tlsL) })
	}, func() { tlsL.Close() })
}

// grpcHandlerFunc is etcd's: HTTP/2 requests with a gRPC content type go to
// gs, the rest to h.
func grpcHandlerFunc(gs *grpc.Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.Contains(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Minute,            // etcd's value
		ErrorLog:          log.New(io.Discard, "", 0), // do not log client errors, like etcd
	}
}

// serve runs what start launches until ctx ends or one of them fails, then
// shuts everything down: stopAccepting closes the listeners derived from
// tl, gs and srv get the grace period, and connections still unclaimed are
// closed.
func serve(ctx context.Context, tl *trackingListener, gs *grpc.Server, srv *http.Server, start func(run func(func() error)), stopAccepting func()) error {
	// stopping is closed when shutdown starts: errors returned by the
	// servers after that are consequences of the shutdown, not failures.
	stopping := make(chan struct{})
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	run := func(serve func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := serve()
			select {
			case <-stopping:
			default:
				if err == nil {
					err = errors.New("grpcapi: server stopped unexpectedly")
				}
				errc <- err
			}
		}()
	}
	start(run)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	close(stopping)

	stopAccepting() // derived listeners stop accepting
	tl.Close()      // the root listener too, so a mux's Serve returns

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		gs.GracefulStop()
	}()
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if serr := srv.Shutdown(grace); serr != nil {
		srv.Close()
	}
	select {
	case <-stopped:
	case <-grace.Done():
		gs.Stop() // also ends the GracefulStop goroutine
		<-stopped
	}
	// What is left open are connections still being sniffed by cmux or
	// handshaken (a client that connected and sent nothing); the mux and
	// the TLS listener wait for them.
	tl.closeConns()
	wg.Wait()
	return err
}

// trackingListener remembers accepted connections until they are closed, so
// Serve can close the ones nobody else owns yet.
type trackingListener struct {
	net.Listener

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

func newTrackingListener(l net.Listener) *trackingListener {
	return &trackingListener{Listener: l, conns: make(map[*trackedConn]struct{})}
}

func (tl *trackingListener) Accept() (net.Conn, error) {
	c, err := tl.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, tl: tl}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tl.conns[tc] = struct{}{}
	return tc, nil
}

func (tl *trackingListener) closeConns() {
	tl.mu.Lock()
	tl.closed = true
	conns := make([]*trackedConn, 0, len(tl.conns))
	for c := range tl.conns {
		conns = append(conns, c)
	}
	tl.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (tl *trackingListener) forget(c *trackedConn) {
	tl.mu.Lock()
	delete(tl.conns, c)
	tl.mu.Unlock()
}

type trackedConn struct {
	net.Conn
	tl   *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.tl.forget(c) })
	return c.Conn.Close()
}
