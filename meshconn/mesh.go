package meshconn

import (
	"github.com/meshetcd/meshetcd/mesh"
)

// Listen opens a PacketConn on a new interactive-priority datagram channel id of r.
func Listen(r *mesh.Router, id mesh.ChannelID, cfg PacketConfig) (*PacketConn, error) {
	return newPacketConn(r.Name(), func(h mesh.DatagramHandler) (channel, error) {
		ch, err := r.NewDatagramChannel(id, "meshconn", mesh.PriorityInteractive, h)
		if err != nil {
			return nil, err
		}
		return ch, nil
	}, cfg)
}

// NewBulk opens a Bulk endpoint on a new bulk-priority datagram channel id
// of r. It gives transfers up when r has had no route to the other side
// for BulkConfig.NoRouteGrace.
func NewBulk(r *mesh.Router, id mesh.ChannelID, cfg BulkConfig) (*Bulk, error) {
	return newBulk(r.Name(), func(h mesh.DatagramHandler) (channel, error) {
		ch, err := r.NewDatagramChannel(id, "meshconn-bulk", mesh.PriorityBulk, h)
		if err != nil {
			return nil, err
		}
		return ch, nil
	}, r.Reachable, cfg)
}
