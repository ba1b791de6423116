// Command meshetcd runs one meshetcd member: an etcd v3–compatible
// key-value server whose Raft consensus runs over a gossip mesh.
//
// It takes etcd's flags with etcd's names and defaults (and the matching
// ETCD_* environment variables), so scripts written for etcd run unchanged.
// Flags meshetcd does not implement are never silently ignored: harmless
// tuning knobs are accepted with a warning, and flags that would change
// security (TLS, client certificate auth, ...) or data placement
// are refused unless left at etcd's default. Peer certificate flags are
// refused with a pointer to the mesh secret (--mesh-password-file or
// MESHETCD_MESH_PASSWORD), which authenticates and encrypts mesh links;
// --peer-auto-tls is honoured: without a secret it encrypts every mesh link
// with ephemeral keys (confidential, not authenticated, like etcd's
// self-signed peer TLS).
//
// --config-file (or ETCD_CONFIG_FILE) reads etcd's YAML configuration file
// instead (configfile.go): each key is applied as the flag of the same name
// (the transport-security blocks as the --cert-file.../--peer-* flags), so
// the file gets the flags' parsing, validation and refusals; as in etcd 3.7,
// every other flag and ETCD_* variable is then ignored, except the mesh
// secret MESHETCD_MESH_PASSWORD.
//
// Clusters form with etcd's static flags (--initial-cluster & co), by mesh
// discovery (--discovery-size N --peers host:port) or by joining a running
// cluster (--join --peers host:port); meshetcd's own flags are also read
// from MESHETCD_* variables.
//
// `meshetcd mesh status --endpoints URL[,URL...]` is the one subcommand: it
// prints a member's mesh graph (the data of the /mesh page: members, links
// with state and round-trip time, Raft paths from the leader) as tables.
//
// Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or --help/--version,
// 1 on a runtime error (port in use, data directory locked, fatal member
// error), 2 on bad usage (unknown flag, bad value, refused flag).
package main
