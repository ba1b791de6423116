package grpcapi

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcMetrics are the per-method series etcd's server gets from
// go-grpc-middleware's prometheus ServerMetrics (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total), with its names, help, labels and counting
// rules. Unlike the middleware, which looks every series up by its labels
// (three or four hashes and map lookups per RPC), the interceptors here use
// series resolved once per method (rpcMethodTable).
type rpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
}

func newRPCMetrics() *rpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	return &rpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels[:3:3], "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
	}
}

func (m *rpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.received.Describe(ch)
	m.sent.Describe(ch)
}

func (m *rpcMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.received.Collect(ch)
	m.sent.Collect(ch)
}

// rpcCodes are the codes grpc_server_handled_total is initialised with
// (the middleware's AllCodes: OK through Unauthenticated).
const rpcCodes = int(codes.Unauthenticated) + 1

// methodSeries are one method's resolved series.
type methodSeries struct {
	started, received, sent prometheus.Counter
	handled                 [rpcCodes]prometheus.Counter
	m                       *rpcMetrics
	typ, service, method    string
}

// resolve looks up a method's series; with allCodes, also its handled
// series of every code, which creates them zero-valued.
func (m *rpcMetrics) resolve(typ, fullMethod string, allCodes bool) *methodSeries {
	service, method := splitFullMethod(fullMethod)
	s := &methodSeries{
		started:  m.started.WithLabelValues(typ, service, method),
		received: m.received.WithLabelValues(typ, service, method),
		sent:     m.sent.WithLabelValues(typ, service, method),
		m:        m, typ: typ, service: service, method: method,
	}
	for c := range s.handled {
		if !allCodes {
			break
		}
		s.handled[c] = m.handled.WithLabelValues(typ, service, method, codes.Code(c).String())
	}
	return s
}

// done counts the RPC as handled with err's code (a context error counts
// as the status gRPC sends for it, like the middleware).
func (s *methodSeries) done(err error) {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	if c := st.Code(); int(c) < rpcCodes && s.handled[c] != nil {
		s.handled[c].Inc()
		return
	}
	s.m.handled.WithLabelValues(s.typ, s.service, s.method, st.Code().String()).Inc()
}

// splitFullMethod splits "/package.Service/Method" as the middleware does.
func splitFullMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.Index(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", "unknown"
}

// rpcType is the grpc_type label of a method.
func rpcType(clientStream, serverStream bool) string {
	switch {
	case !clientStream && !serverStream:
		return "unary"
	case clientStream && !serverStream:
		return "client_stream"
	case !clientStream && serverStream:
		return "server_stream"
	default:
		return "bidi_stream"
	}
}

// rpcMethodTable holds the resolved series of every method a server
// registered. It is filled once, by initialize, before the server serves,
// and only read afterwards.
type rpcMethodTable struct {
	m       *rpcMetrics
	methods map[string]*methodSeries
}

// initialize resolves every method of gs, which creates their zero-valued
// series (etcd's InitializeMetrics), so rates exist before the first call.
func (t *rpcMethodTable) initialize(gs *grpc.Server) {
	methods := map[string]*methodSeries{}
	for service, info := range gs.GetServiceInfo() {
		for _, mi := range info.Methods {
			full := "/" + service + "/" + mi.Name
			methods[full] = t.m.resolve(rpcType(mi.IsClientStream, mi.IsServerStream), full, true)
		}
	}
	t.methods = methods
}

func (t *rpcMethodTable) series(typ, fullMethod string) *methodSeries {
	if s, ok := t.methods[fullMethod]; ok && s.typ == typ {
		return s
	}
	return t.m.resolve(typ, fullMethod, false)
}

func (t *rpcMethodTable) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		s := t.series("unary", info.FullMethod)
		s.started.Inc()
		s.received.Inc()
		resp, err := handler(ctx, req)
		s.sent.Inc()
		s.done(err)
		return resp, err
	}
}

func (t *rpcMethodTable) streamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		s := t.series(rpcType(info.IsClientStream, info.IsServerStream), info.FullMethod)
		s.started.Inc()
		err := handler(srv, countedStream{ServerStream: ss, s: s})
		s.done(err)
		return err
	}
}

// countedStream counts every message sent and received, failed or not (as
// the middleware does).
type countedStream struct {
	grpc.ServerStream
	s *methodSeries
}

func (c countedStream) SendMsg(m any) error {
	err := c.ServerStream.SendMsg(m)
	c.s.sent.Inc()
	return err
}

func (c countedStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	c.s.received.Inc()
	return err
}
