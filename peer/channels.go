package peer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"

	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/raftnode"
)

// The mesh channels members talk on. Every member must use the same ids:
// they are part of the wire protocol. The mesh reserves ids below 32 for
// itself (topology gossip).
const (
	// RaftChannel carries raft messages, one per datagram.
	RaftChannel mesh.ChannelID = 32
	// BulkChannel carries snapshot transfers (MsgSnap plus the database).
	BulkChannel mesh.ChannelID = 33
	// RequestChannel carries peer requests (lease forwarding, promote,
	// join, member list, removal notices).
	RequestChannel mesh.ChannelID = 34
	// DiscoveryChannel is the gossip channel of mesh discovery
	// (--discovery-size): members announce themselves on it.
	DiscoveryChannel mesh.ChannelID = 48
)

// datagramSlack covers meshconn's per-datagram header, with room to spare.
const datagramSlack = 64 << 10

// MaxDatagramSize is the mesh.Config.MaxDatagramSize a router must have to
// carry the raft messages of a member with this MaxSizePerMsg (0: raftnode's
// default): raftnode.RequiredMessageSize plus meshconn's header, with
// slack. With kvstore's defaults (MaxRequestBytes 1.5 MiB, MaxSizePerMsg
// 2 MiB) it is about 2.6 MiB.
func MaxDatagramSize(maxSizePerMsg uint64) int {
	return raftnode.RequiredMessageSize(maxSizePerMsg) + datagramSlack
}

// NameFromURLs is the mesh peer name of a member with these advertised
// peer URLs: host:port of the first URL in sorted order (etcd's
// membership.NewMember sorts them). It works in every bootstrap mode,
// because the peer URLs are in the committed membership before the member's
// id is known to it.
func NameFromURLs(peerURLs []string) (mesh.PeerName, error) {
	if len(peerURLs) == 0 {
		return "", errors.New("peer: member has no peer URLs")
	}
	urls := append([]string(nil), peerURLs...)
	sort.Strings(urls)
	u, err := url.Parse(urls[0])
	if err != nil {
		return "", fmt.Errorf("peer: peer URL %q: %w", urls[0], err)
	}
	if u.Host == "" {
		return "", fmt.Errorf("peer: peer URL %q has no host:port", urls[0])
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("peer: peer URL %q: %w", urls[0], err)
	}
	return mesh.PeerName(u.Host), nil
}
