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
// ListenMetricsURLs adds listeners that serve only /metrics and the health
// endpoints, plaintext or (https://) with ClientTLSInfo, like etcd's
// --listen-metrics-urls.
//
// # Members and the mesh
//
// Every member runs a mesh router (package mesh) listening on its
// ListenPeerURLs, advertising its AdvertisePeerURLs, with the cluster token
// as mesh cluster label and host:port of its first sorted advertised peer
// URL as mesh peer name (peer.NameFromURLs); its seeds are the other
// members' peer URLs and Peers. The member's one door to the others is a
// peer.Transport on that router: raft messages, snapshots and the peer
// requests (lease forwarding, promote, join) all go through it, and kvstore
// and raftnode see it only through the interfaces they define. The
// datagram limit is peer.MaxDatagramSize(kvstore.Config.
// EffectiveMaxSizePerMsg()), so --max-request-bytes < raft MaxSizePerMsg <
// mesh datagram limit. The router's status is served as JSON at
// /mesh/status on every client URL. Close stops serving clients, then
// kvstore (a leader hands leadership over), then the router.
//
// The wiring, in the order StartMember does it:
//
//	name, _ := peer.NameFromURLs(advertisePeerURLs)
//	mcfg := mesh.DefaultConfig()
//	mcfg.Name = name // peer.New checks it against PeerURLs
//	mcfg.ClusterLabel = initialClusterToken
//	mcfg.ListenAddr, mcfg.Seeds = listenPeerHostPort, otherPeerHostPorts
//	mcfg.MaxDatagramSize = peer.MaxDatagramSize(kcfg.EffectiveMaxSizePerMsg())
//	r, _ := mesh.New(mcfg)
//	_ = r.Start(ctx)
//	kcfg.Peers = func(h kvstore.PeerHost) (kvstore.Peers, error) {
//		return peer.New(peer.Config{Router: r, Host: h, PeerURLs: advertisePeerURLs})
//	}
//	kcfg.Join = joinFlag // or InitialClusterState = "existing"
//	s, err := kvstore.New(ctx, kcfg) // ctx bounds a join's wait for the cluster
//	g := grpcapi.NewGRPCServer(s, gcfg) // then serve clients
//	...
//	s.Stop() // first: hands over leadership, closes the peer transport
//	r.Stop() // then the router
//
// # Forming a cluster
//
//   - Static, etcd's flags: InitialCluster, InitialClusterState "new",
//     InitialClusterToken; member ids derive from them as in etcd.
//   - Discovery (DiscoverySize n, Peers): every member gossips an
//     announcement {name, peer URLs, client URLs, token, seen set,
//     initial set, cluster id} on a mesh gossip channel (a last-writer-wins
//     map: a CRDT). A member bootstraps when exactly n candidates are known
//     and every one of them announces that it sees exactly those n (or
//     when someone announced an initial set containing it); the initial
//     cluster is then the same map everywhere. A member that finds a
//     running cluster joins it; more than n candidates and no cluster is
//     refused after a grace period (ErrDiscoveryTooMany). See decide.
//   - Join (Join, Peers): kvstore asks the cluster over the mesh to add the
//     member as a learner; it is promoted once caught up. etcd's
//     "member add" + InitialClusterState "existing" works too. A joiner
//     that gets no answer gives up after JoinTimeout (60 s) with
//     ErrJoinTimeout and the last reason ("mesh secret mismatch with
//     10.0.0.1:2380", "no member reachable over the mesh", ...).
//
// A member whose data directory holds a WAL ignores all of these and
// restarts from it.
//
// # Clusters in one process
//
// StartCluster runs n members in the process, on loopback TCP or, with
// ClusterOptions.Network (embedtest.NewNetwork(), mesh/memnet), on an in-memory
// network with Cut/Heal/Partition for tests, and returns a client
// connected to all of them; see ExampleStartCluster. The in-memory network
// is an option rather than a dependency, so the meshetcd binary does not
// link it.
package embed
