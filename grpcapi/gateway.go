package grpcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/tmc/grpc-websocket-proxy/wsproxy"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	etcdservergw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	v3electiongw "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb/gw"
	v3lockgw "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb/gw"
)

// Gateway is etcd's JSON gateway (the /v3/... HTTP API, e.g. POST
// /v3/kv/put): grpc-gateway handlers, wrapped in a websocket proxy for the
// streaming calls, whose backend is a gRPC connection to the member's own
// client port. Dialing the port rather than calling the services in process
// is what etcd does, and the only way the streaming methods (Watch, lease
// keep-alive, Snapshot) work through grpc-gateway.
//
// Mount it with Config.Gateway. The connection is lazy: the gateway can be
// built before the port is served. Close releases it.
type Gateway struct {
	conn    *grpc.ClientConn
	handler http.Handler
}

// NewGateway builds the gateway for the gRPC server reachable at target
// (host:port of a plaintext client listener).
func NewGateway(ctx context.Context, target string, lg *zap.Logger) (*Gateway, error) {
	return newGateway(ctx, target, insecure.NewCredentials(), lg)
}

// NewTLSGateway builds the gateway for an https:// client listener at
// target, dialing it as etcd does: with the member's own server TLS
// configuration (tlsInfo.ServerConfig), which presents --client-cert-file
// (else --cert-file) when the port demands a client certificate, and
// without verifying the server, which is the member itself. Requests the
// gateway proxies never authenticate as that certificate's CN (the gateway
// marks them, and auth ignores the CN then), exactly like etcd.
func NewTLSGateway(ctx context.Context, target string, tlsInfo *transport.TLSInfo, lg *zap.Logger) (*Gateway, error) {
	cfg, err := tlsInfo.ServerConfig()
	if err != nil {
		return nil, fmt.Errorf("grpcapi: gateway TLS configuration: %w", err)
	}
	dial := cfg.Clone()
	dial.InsecureSkipVerify = true // the local server
	return newGateway(ctx, target, credentials.NewTLS(dial), lg)
}

func newGateway(ctx context.Context, target string, creds credentials.TransportCredentials, lg *zap.Logger) (*Gateway, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		return nil, fmt.Errorf("grpcapi: gateway connection to %s: %w", target, err)
	}
	// etcd's JSON flavour: proto field names, no zero values, unknown
	// fields ignored.
	mux := gw.NewServeMux(
		gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
			Marshaler: &compactJSONPb{gw.JSONPb{
				MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
			}},
		}),
	)
	for _, register := range []func(context.Context, *gw.ServeMux, *grpc.ClientConn) error{
		etcdservergw.RegisterKVHandler,
		etcdservergw.RegisterWatchHandler,
		etcdservergw.RegisterLeaseHandler,
		etcdservergw.RegisterClusterHandler,
		etcdservergw.RegisterMaintenanceHandler,
		etcdservergw.RegisterAuthHandler,
		v3lockgw.RegisterLockHandler,
		v3electiongw.RegisterElectionHandler,
	} {
		if err := register(ctx, mux, conn); err != nil {
			conn.Close()
			return nil, fmt.Errorf("grpcapi: register gateway handler: %w", err)
		}
	}
	h := wsproxy.WebsocketProxy(mux,
		// Streams over a websocket are POSTs to the gateway.
		wsproxy.WithRequestMutator(func(_ *http.Request, outgoing *http.Request) *http.Request {
			outgoing.Method = http.MethodPost
			return outgoing
		}),
		wsproxy.WithMaxRespBodyBufferSize(math.MaxInt32),
		wsproxy.WithLogger(wsProxyZapLogger{lg}),
	)
	return &Gateway{conn: conn, handler: h}, nil
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// grpc-gateway forwards Accept as the grpcgateway-accept metadata, by
	// which auth recognises a proxied request and refuses to take the
	// gateway's own client certificate CN as the user (etcd's
	// AuthInfoFromTLS). A request without Accept would slip through as
	// that CN in etcd; give every request one.
	if r.Header.Get("Accept") == "" {
		r.Header.Set("Accept", "*/*")
	}
	g.handler.ServeHTTP(w, r)
}

// Close closes the gateway's gRPC connection.
func (g *Gateway) Close() error { return g.conn.Close() }

type wsProxyZapLogger struct{ *zap.Logger }

func (w wsProxyZapLogger) Warnln(i ...any)  { w.Warn(fmt.Sprint(i...)) }
func (w wsProxyZapLogger) Debugln(i ...any) { w.Debug(fmt.Sprint(i...)) }

// compactJSONPb is etcd's JSON marshaller with the whitespace removed.
// protojson deliberately varies its spacing from one binary to another (so
// nobody depends on it); etcd's release binaries happen to emit none, and
// scripts that match bytes should see the same from us.
type compactJSONPb struct{ gw.JSONPb }

func (c *compactJSONPb) Marshal(v any) ([]byte, error) {
	b, err := c.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b, nil // not JSON after all (cannot happen); send as is
	}
	return out.Bytes(), nil
}
