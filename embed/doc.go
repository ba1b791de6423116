// Package embed assembles one meshetcd member — the state machine and
// consensus (kvstore), the etcd v3 gRPC services and HTTP endpoints
// (grpcapi) and the client listeners — behind a small Go API:
//
//	cfg := embed.NewConfig()
//	cfg.Name, cfg.DataDir = "m1", dir
//	m, err := embed.StartMember(ctx, cfg)
//	if err != nil { ... }
//	defer m.Close()
//	cli, err := m.Client() // a clientv3.Client connected to the member
//
// Config mirrors etcd's embed.Config where etcd has the same knob, with
// etcd's defaults, so code and scripts written for etcd carry over.
// StartMember returns once the member serves linearizable requests; at that
// point it logs etcd's "ready to serve client requests" line, which tools
// (and meshetcd's own integration tests) wait for.
//
// Today a member is a one-member cluster: multi-member clusters over the
// gossip mesh and embed.StartCluster are the next milestone.
package embed
