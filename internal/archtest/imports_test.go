package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/meshetcd/meshetcd/"

// deps lists pkg's transitive dependencies inside the module (go list
// -deps, as the shipped build sees them: without test files).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", module+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	var ours []string
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, module) {
			ours = append(ours, strings.TrimPrefix(p, module))
		}
	}
	return ours
}

func TestImportRules(t *testing.T) {
	for _, rule := range []struct {
		pkg    string
		banned []string
		why    string
	}{
		{"kvstore", []string{"mesh", "meshconn", "peer", "mesh/memnet"}, "kvstore talks to members only through its Peers interface"},
		{"raftnode", []string{"mesh", "meshconn", "peer", "kvstore", "mesh/memnet"}, "raftnode sends through the Transport interface it defines"},
		{"peer", []string{"kvstore", "grpcapi", "embed"}, "the member transport is built from interfaces, not from the state machine"},
		{"mesh", []string{"raftnode", "kvstore", "peer", "meshconn"}, "the mesh knows nothing of raft"},
		{"meshconn", []string{"raftnode", "kvstore", "peer"}, "meshconn is a generic datagram and bulk transport"},
		{"cmd/meshetcd", []string{"mesh/memnet", "mesh/meshtest", "embed/embedtest", "internal/raftnet", "internal/testutil"}, "test doubles stay out of the binary"},
	} {
		got := deps(t, rule.pkg)
		for _, b := range rule.banned {
			if slices.Contains(got, b) {
				t.Errorf("%s depends on %s: %s", rule.pkg, b, rule.why)
			}
		}
	}
}
