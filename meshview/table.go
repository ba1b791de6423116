package meshview

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTables prints the graph for terminals: the leader, then the
// members, the links and the Raft paths from the leader as aligned tables.
func WriteTables(w io.Writer, g Graph) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	leader := g.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(tw, "Leader: %s (viewed from %s at %s)\n\n", leader, g.Viewer, g.Time.Format("2006-01-02T15:04:05Z07:00"))

	fmt.Fprintln(tw, "MEMBER\tROLE\tPEER ADDRESS\tIN MESH\tCLIENT URLS")
	for _, m := range g.Members {
		role := "follower"
		switch {
		case m.Leader:
			role = "leader"
		case m.NotMember:
			role = "mesh peer"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, role, m.Peer, yesNo(m.InMesh), dash(strings.Join(m.ClientURLs, ",")))
	}

	fmt.Fprintln(tw, "\nLINK\tSTATE\tRTT")
	for _, l := range g.Links {
		fmt.Fprintf(tw, "%s <-> %s\t%s\t%s\n", l.A, l.B, l.State, dash(l.RTT))
	}

	if g.Leader != "" {
		fmt.Fprintln(tw, "\nRAFT PATH\tHOPS\tVIA")
		for _, r := range g.Routes {
			switch {
			case len(r.Path) == 0:
				fmt.Fprintf(tw, "%s -> %s\t-\tunreachable\n", g.Leader, r.To)
			case r.Hops() == 1:
				fmt.Fprintf(tw, "%s -> %s\t1\tdirect\n", g.Leader, r.To)
			default:
				fmt.Fprintf(tw, "%s -> %s\t%d\t%s\n", g.Leader, r.To, r.Hops(), strings.Join(r.Via(), ", "))
			}
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
