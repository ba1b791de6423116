// Package archtest checks the import graph the design promises (go list
// -deps): kvstore and raftnode never reach the mesh, the member transport
// (peer) depends on nothing above it, the mesh knows nothing of raft, and
// the meshetcd binary links no test doubles. It has tests only; they run
// in `make test`.
package archtest
