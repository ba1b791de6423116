package embed

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/meshetcd/meshetcd/mesh"
)

func names(s string) []mesh.PeerName {
	if s == "" {
		return nil
	}
	var out []mesh.PeerName
	for _, p := range strings.Split(s, ",") {
		out = append(out, mesh.PeerName(p))
	}
	return out
}

// TestDiscoveryScenarios drives decide and the announcement merge with
// testdata/discovery.txt:
//
//	reset
//	announce peer=a [name=a] [seen=a,b] [initial=a,b,c] [cluster=x] [version=N] [token=t]
//	decide self=a n=3
//	merge-commutes   (merges every order of the announcements; same result?)
func TestDiscoveryScenarios(t *testing.T) {
	var view announcements
	var order []*announcement
	datadriven.RunTest(t, "testdata/discovery.txt", func(t *testing.T, d *datadriven.TestData) string {
		arg := func(k, def string) string {
			if d.HasArg(k) {
				var v string
				d.ScanArgs(t, k, &v)
				return v
			}
			return def
		}
		switch d.Cmd {
		case "reset":
			view, order = announcements{}, nil
			return "ok"
		case "announce":
			p := arg("peer", "")
			var ver uint64
			if d.HasArg("version") {
				d.ScanArgs(t, "version", &ver)
			}
			a := &announcement{
				Peer: mesh.PeerName(p), Name: arg("name", p), PeerURLs: []string{"http://" + p + ":2380"},
				Token: arg("token", "tok"), Version: ver,
				Seen: names(arg("seen", "")), Initial: names(arg("initial", "")), ClusterID: arg("cluster", ""),
			}
			order = append(order, a)
			if view.merge(announcements{a.Peer: a}) == nil {
				return "no change"
			}
			return "ok"
		case "decide":
			var n int
			d.ScanArgs(t, "n", &n)
			return decide(mesh.PeerName(arg("self", "")), n, view).String()
		case "merge-commutes":
			// Every rotation and the reverse order must give the same state.
			want := fmt.Sprint(encodeSorted(view))
			for r := range len(order) {
				s := announcements{}
				for i := range order {
					s.merge(announcements{order[(i+r)%len(order)].Peer: order[(i+r)%len(order)]})
				}
				if got := fmt.Sprint(encodeSorted(s)); got != want {
					return fmt.Sprintf("rotation %d differs:\n%s\nwant\n%s", r, got, want)
				}
			}
			s := announcements{}
			for i := len(order) - 1; i >= 0; i-- {
				s.merge(announcements{order[i].Peer: order[i]})
			}
			if got := fmt.Sprint(encodeSorted(s)); got != want {
				return "reverse order differs"
			}
			return "commutes"
		default:
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		}
	})
}

func encodeSorted(s announcements) string {
	b := s.Encode()
	if len(b) == 0 {
		return ""
	}
	return string(b[0]) // encoding/json sorts map keys
}
