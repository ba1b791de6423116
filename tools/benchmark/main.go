// Command benchmark is etcd's own low-level benchmark tool (tools/benchmark in the
// go.etcd.io/etcd/v3 module), built through this wrapper because `go install` refuses
// that module's replace directives. The newest go.etcd.io/etcd/v3 our module proxy
// offers is v3.6.8 (`go list -m -versions` lists no 3.7); its gRPC client speaks the
// same v3 API as etcd 3.7.3. bench/ drives it against etcd and meshetcd.
package main

import (
	"fmt"
	"os"

	"go.etcd.io/etcd/v3/tools/benchmark/cmd"
)

func main() {
	if err := cmd.RootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
