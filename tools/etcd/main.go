// Command etcd is etcd's own server, v3.7.3, built from go.etcd.io/etcd/server/v3
// through this wrapper because `go install` refuses that module's replace directives.
// It is the reference that bench/ compares meshetcd against; never committed as a binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
