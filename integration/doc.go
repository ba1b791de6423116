// Package integration holds meshetcd's end-to-end tests: they start real
// members — the meshetcd binary as a child process (MESHETCD_BIN, or built
// into a temp dir by TestMain) and in-process members through embed — and
// drive them with clientv3 and etcd's own etcdctl (ETCDCTL_BIN, or built
// from tools/etcdctl), including faults such as SIGKILL and torn WAL tails.
// When an etcd 3.7.3 binary is available (bin/etcd, or MESHETCD_DIFF_ETCD_BIN)
// a differential test runs the same etcdctl script against both.
//
// The package has no non-test code.
package integration
