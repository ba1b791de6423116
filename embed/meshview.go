package embed

import (
	"github.com/meshetcd/meshetcd/kvstore"
	"github.com/meshetcd/meshetcd/mesh"
	"github.com/meshetcd/meshetcd/meshview"
)

// meshViewSource gives the mesh page (meshview) the member's mesh status
// and the committed membership with the leader.
type meshViewSource struct {
	name   string
	srv    kvstore.Info
	router *mesh.Router
}

func (s meshViewSource) MeshStatus() mesh.Status { return s.router.Status() }

func (s meshViewSource) Membership() (self, leader string, members []meshview.MemberInfo) {
	lead := s.srv.Leader()
	for _, m := range s.srv.Members() {
		if m.ID == lead {
			leader = m.Name
		}
		members = append(members, meshview.MemberInfo{Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs})
	}
	return s.name, leader, members
}
