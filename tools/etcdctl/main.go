// Command etcdctl is etcd's own etcdctl, built from go.etcd.io/etcd/etcdctl/v3
// through this wrapper because `go install` refuses that module's replace directives.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
