// Package meshview shows an operator how the members of a meshetcd cluster
// are connected: which mesh links are up, their round-trip times, who
// leads, and the path Raft traffic takes from the leader to each member
// (directly or relayed through another member).
//
// It owns the view, not the data: Build turns one member's mesh status
// (which holds the whole gossiped topology), the committed membership with
// the leader, and the mesh statuses of other members (for the round-trip
// times of links the viewer is not on) into a Graph. Handler serves that
// Graph as JSON at /mesh/graph and a self-contained HTML page at /mesh
// that draws it and refreshes every second. WriteTables prints the same
// Graph for terminals (`meshetcd mesh status`).
//
// Routes are derived the way the mesh computes them: a breadth-first
// search over the established links, visiting peers in name order, so the
// drawn path from the leader is the one its Raft messages take.
package meshview
