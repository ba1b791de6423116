// Package ring owns the bounded FIFO that mesh and meshconn use for
// received messages: a ring that starts empty and doubles up to its bound
// (instead of a preallocated Go channel of the bound's size, idle on a
// member that never receives), refuses pushes when full (the caller drops
// and counts), and wakes consumers through a one-token channel.
package ring
