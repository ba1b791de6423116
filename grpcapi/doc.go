// Package grpcapi is the client-facing surface of a meshetcd member: the etcd
// v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance, Auth, Lock,
// Election), the request validation etcd performs before proposing, the
// mapping of internal errors to etcd's wire errors (rpctypes), the gRPC
// interceptors (leader requirement, learner restrictions, request logging,
// metrics), the HTTP endpoints that share the client port (/health, /livez,
// /readyz, /version, /metrics, /debug/pprof, the /v3/ JSON gateway) and the
// listeners that serve gRPC and HTTP on one port like etcd does: Serve for
// http:// URLs (a cmux splits the two), ServeTLS for https:// URLs (etcd's
// transport TLS listener, then one HTTP/2 server that hands gRPC requests
// to the gRPC server, so calls see the client's certificate).
//
// It owns no state of its own beyond what a request needs: everything is
// delegated to a kvstore.API. Behaviour is modelled on etcd v3.7.3's
// server/etcdserver/api/v3rpc and server/embed/serve.go, which cannot be
// imported because they link all of etcdserver; clients must not be able to
// tell the difference.
//
// Wiring one client URL (what embed does):
//
//	l, _ := net.Listen("tcp", host)        // the client listener
//	<-s.ReadyNotify()                      // etcd serves clients only once ready
//	gw, _ := grpcapi.NewGateway(ctx, l.Addr().String(), lg) // optional
//	cfg := grpcapi.Config{Logger: lg, Gateway: gw, ...}
//	err := grpcapi.Serve(ctx, l, grpcapi.NewGRPCServer(s, cfg), grpcapi.NewHTTPHandler(s, cfg))
//	// https:// instead: grpcapi.NewTLSGateway(ctx, addr, tlsInfo, lg) and
//	// grpcapi.ServeTLS(ctx, l, gs, h, tlsInfo, maxConcurrentStreams)
//	gw.Close()
//
// Serve returns when ctx ends; it closes l and stops the gRPC server.
package grpcapi
