package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestLongUnicodeNames: etcd puts no limit on --name, so neither may
// meshetcd (its mesh nickname is only a label). A 3-member cluster whose
// names are 200 bytes of mixed ASCII and multi-byte UTF-8 forms, serves,
// and lists the names unchanged.
func TestLongUnicodeNames(t *testing.T) {
	name := func(i int) string {
		n := fmt.Sprintf("member-%d-", i) + strings.Repeat("ü€", 30) // 2+3 bytes each
		return n + strings.Repeat("x", 200-len(n))
	}
	if len(name(0)) != 200 {
		t.Fatalf("test name is %d bytes", len(name(0)))
	}
	c := StartCluster(t, ClusterOptions{Name: name})
	c.MustCtl(t, nil, "put", "long", "names")
	if out := c.MustCtl(t, []int{2}, "get", "long", "--print-value-only"); strings.TrimSpace(out) != "names" {
		t.Fatalf("get on member 2: %q", out)
	}
	var list struct {
		Members []struct {
			Name string `json:"name"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(c.MustCtl(t, []int{1}, "member", "list", "-w", "json")), &list); err != nil {
		t.Fatalf("member list: %v", err)
	}
	var got []string
	for _, m := range list.Members {
		got = append(got, m.Name)
	}
	slices.Sort(got)
	if want := []string{name(0), name(1), name(2)}; !slices.Equal(got, want) {
		t.Errorf("member names = %q, want %q", got, want)
	}
}
