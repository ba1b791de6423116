package embed

import (
	"fmt"
	"net/url"
	"slices"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/kvstore"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/peer"
)

// meshPeerName is the member's mesh name: host:port of its first sorted
// advertised peer URL (the peer package resolves members the same way from
// the membership).
func meshPeerName(cfg *Config) (mesh.PeerName, error) {
	return peer.NameFromURLs(urlStrings(cfg.AdvertisePeerURLs))
}

// routerConfig turns a member's configuration into its mesh router's.
// datagram is the size raft needs (meshDatagramSize), so that
// --max-request-bytes < raft MaxSizePerMsg < mesh datagram limit.
func routerConfig(cfg *Config, lg *zap.Logger, ic map[string][]string, datagram int) (mesh.Config, error) {
	name, err := meshPeerName(cfg)
	if err != nil {
		return mesh.Config{}, err
	}
	mc := mesh.DefaultConfig()
	mc.Name = name
	mc.NickName = meshNickName(cfg.Name)
	mc.ClusterLabel = cfg.InitialClusterToken
	mc.ListenAddr = cfg.ListenPeerURLs[0].Host
	for _, u := range cfg.AdvertisePeerURLs {
		mc.AdvertiseAddrs = append(mc.AdvertiseAddrs, u.Host)
	}
	// Seeds: every other member's peer URLs, then --peers.
	for member, urls := range ic {
		if member == cfg.Name {
			continue
		}
		for _, s := range urls {
			if u, err := url.Parse(s); err == nil && u.Host != "" {
				mc.Seeds = append(mc.Seeds, u.Host)
			}
		}
	}
	mc.Seeds = append(mc.Seeds, cfg.Peers...)
	slices.Sort(mc.Seeds)
	mc.Seeds = slices.Compact(mc.Seeds)
	mc.Seeds = slices.DeleteFunc(mc.Seeds, func(s string) bool { return slices.Contains(mc.AdvertiseAddrs, s) })

	if err := peerSecurity(cfg, lg, &mc); err != nil {
		return mesh.Config{}, err
	}
	// The mesh must notice a dead link well inside raft's election
	// timeout so it reroutes before raft suspects the leader: detection
	// (DeadTimeout + one heartbeat) at about 3/4 of the election timeout,
	// which gives the mesh's own defaults for etcd's default 1 s. Longer
	// election timeouts (WANs) get proportionally more patient links;
	// shorter ones faster detection, down to a floor below which a busy
	// machine would tear down healthy links.
	if cfg.ElectionTimeout != DefaultElectionTimeout {
		mc.DeadTimeout = max(cfg.ElectionTimeout*6/10, minMeshDeadTimeout)
		mc.HeartbeatInterval = mc.DeadTimeout / 4
	}
	mc.MaxDatagramSize = max(mc.MaxDatagramSize, datagram)
	mc.Logger = lg.Named("mesh")
	if cfg.MeshTransport != nil {
		mc.Transport = cfg.MeshTransport
	}
	if cfg.MeshTuning != nil {
		cfg.MeshTuning(&mc)
	}
	if mc.Name != name {
		return mesh.Config{}, fmt.Errorf("MeshTuning must not change the mesh peer name (%s)", name)
	}
	return mc, nil
}

// meshNickNameMax is the mesh's limit on a nickname (mesh.Config.NickName).
const meshNickNameMax = 64

// meshNickName is the member name as the mesh shows it. The nickname is only
// a label in mesh status; etcd puts no limit on --name, so a longer name is
// cut at a UTF-8 boundary with "…" rather than refused.
func meshNickName(name string) string {
	if len(name) <= meshNickNameMax {
		return name
	}
	const ellipsis = "…"
	cut := meshNickNameMax - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut] + ellipsis
}

// meshDatagramSize is the datagram limit raft needs for this config.
func meshDatagramSize(kc kvstore.Config) int {
	return peer.MaxDatagramSize(kc.EffectiveMaxSizePerMsg())
}

// meshPeers is kvstore.Config.Peers for a member on router: its one door
// to the other members over the mesh.
func meshPeers(lg *zap.Logger, router *mesh.Router, peerURLs []string) func(kvstore.PeerHost) (kvstore.Peers, error) {
	return func(h kvstore.PeerHost) (kvstore.Peers, error) {
		return peer.New(peer.Config{Logger: lg, Router: router, Host: h, PeerURLs: peerURLs})
	}
}

// minMeshDeadTimeout is the shortest dead-link timeout derived from a short
// election timeout.
const minMeshDeadTimeout = 300 * time.Millisecond

// routerStartTimeout bounds how long a member waits for the router to start
// listening (not for peers).
const routerStartTimeout = 10 * time.Second
