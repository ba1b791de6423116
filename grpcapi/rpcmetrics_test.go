package grpcapi

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// rpcMetrics must expose exactly what go-grpc-middleware's ServerMetrics
// (etcd's) exposes for the same calls: run one sequence through both and
// compare the scraped text.
func TestRPCMetricsMatchMiddleware(t *testing.T) {
	gs := grpc.NewServer()
	pb.RegisterKVServer(gs, pb.UnimplementedKVServer{})
	pb.RegisterWatchServer(gs, pb.UnimplementedWatchServer{})
	healthpb.RegisterHealthServer(gs, health.NewServer())

	theirs := grpcprom.NewServerMetrics()
	theirs.InitializeMetrics(gs)
	ours := &rpcMethodTable{m: newRPCMetrics()}
	ours.initialize(gs)

	run := func(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) {
		put := &grpc.UnaryServerInfo{FullMethod: "/etcdserverpb.KV/Put"}
		for _, err := range []error{nil, nil, status.Error(codes.NotFound, "x"), context.Canceled,
			context.DeadlineExceeded, errors.New("plain"), status.Error(codes.Code(42), "beyond the known codes")} {
			_, _ = unary(context.Background(), &pb.PutRequest{}, put, func(context.Context, any) (any, error) {
				return &pb.PutResponse{}, err
			})
		}
		// A method the server does not know (never reaches interceptors in
		// practice) still counts under its own labels.
		_, _ = unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"},
			func(context.Context, any) (any, error) { return nil, nil })
		watch := &grpc.StreamServerInfo{FullMethod: "/etcdserverpb.Watch/Watch", IsClientStream: true, IsServerStream: true}
		_ = stream(nil, &fakeServerStream{recvs: 2}, watch, func(_ any, ss grpc.ServerStream) error {
			for ss.RecvMsg(&pb.WatchRequest{}) == nil {
				_ = ss.SendMsg(&pb.WatchResponse{})
			}
			return status.Error(codes.Unavailable, "gone")
		})
	}
	run(theirs.UnaryServerInterceptor(), theirs.StreamServerInterceptor())
	run(ours.unaryInterceptor(), ours.streamInterceptor())

	scrape := func(c prometheus.Collector) string {
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
		return b.String()
	}
	want, got := scrape(theirs), scrape(ours.m)
	if got != want {
		t.Fatalf("rpcMetrics scrape differs from go-grpc-middleware's:\n--- ours\n%s\n--- theirs\n%s", got, want)
	}
	if !strings.Contains(got, `grpc_server_handled_total{grpc_code="Canceled",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1`) ||
		!strings.Contains(got, `grpc_server_msg_sent_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 2`) {
		t.Fatalf("the sequence did not count as expected:\n%s", got)
	}
}

// fakeServerStream delivers recvs messages, then io.EOF; sends succeed.
type fakeServerStream struct {
	grpc.ServerStream
	recvs int
}

func (f *fakeServerStream) Context() context.Context { return context.Background() }
func (f *fakeServerStream) SendMsg(any) error        { return nil }
func (f *fakeServerStream) RecvMsg(any) error {
	if f.recvs == 0 {
		return io.EOF
	}
	f.recvs--
	return nil
}
