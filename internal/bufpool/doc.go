// Package bufpool recycles byte buffers in power-of-two size classes.
//
// A single sync.Pool of buffers either keeps only small ones (and then
// every big datagram is allocated and zeroed afresh: a raft append of
// 64 KiB entries is 0.5-1 MiB) or hands a big buffer to a small request.
// Classes avoid both; sync.Pool still frees what sits idle across two
// garbage collections, so a burst of big buffers is not pinned.
package bufpool
