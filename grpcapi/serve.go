package grpcapi

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/soheilhy/cmux"
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

	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Minute,            // etcd's value
		ErrorLog:          log.New(io.Discard, "", 0), // do not log client errors, like etcd
	}

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
	run(func() error { return gs.Serve(grpcL) })
	run(func() error { return srv.Serve(httpL) })
	run(m.Serve)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	close(stopping)

	m.Close()  // child listeners stop accepting
	tl.Close() // the root listener too, so m.Serve returns

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
	// What is left open are connections still being sniffed by cmux (a
	// client that connected and sent nothing); m.Serve waits for them.
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
