// Command meshetcd runs one meshetcd member: an etcd v3–compatible
// key-value server whose Raft consensus runs over a gossip mesh.
//
// It takes etcd's flags with etcd's names and defaults (and the matching
// ETCD_* environment variables), so scripts written for etcd run unchanged.
// Flags meshetcd does not implement are never silently ignored: harmless
// tuning knobs are accepted with a warning, and flags that would change
// security (TLS, client certificate auth, auth tokens, ...) or data placement
// are refused unless left at etcd's default.
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or --help/--version,
// 1 on a runtime error (port in use, data directory locked, fatal member
// error), 2 on bad usage (unknown flag, bad value, refused flag).
package main
