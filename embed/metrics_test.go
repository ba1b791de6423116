package embed

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMembersExportTheirOwnMetrics: every member of an in-process cluster
// serves its own etcd_server_* and meshetcd_mesh_* series on /metrics (one
// registry per member, so members of one process do not collide), with the
// process-wide ones beside them.
func TestMembersExportTheirOwnMetrics(t *testing.T) {
	c := startTestCluster(t, 3, ClusterOptions{})
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, m := range c.Members() {
		u := m.ClientURLs()[0]
		resp, err := hc.Get(u.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		for _, want := range []string{
			`etcd_server_id{server_id="` + m.Server().MemberID().String() + `"} 1`,
			"etcd_server_has_leader 1",
			"meshetcd_mesh_links_up ",
			"meshetcd_mesh_link_round_trip_time_seconds{peer=",
			"etcd_mvcc_db_total_size_in_bytes ", // the default registry, too
		} {
			if !strings.Contains(body, want) {
				t.Errorf("member %s /metrics lacks %q", m.Name(), want)
			}
		}
	}
}
