package main

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshetcd/meshetcd/meshview"
)

func runArgs(args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := run(append([]string{"meshetcd"}, args...), &out, &errOut, fakeEnv{})
	return code, out.String(), errOut.String()
}

func graphServer(t *testing.T) *httptest.Server {
	t.Helper()
	g := meshview.Graph{Viewer: "m1", Leader: "m0",
		Members: []meshview.Member{{Name: "m0", Peer: "10.0.0.1:2380", Leader: true, InMesh: true}, {Name: "m1", Peer: "10.0.0.2:2380", InMesh: true}},
		Links:   []meshview.Link{{A: "m0", B: "m1", State: meshview.LinkUp, RTT: "1ms"}},
		Routes:  []meshview.Route{{To: "m1", Path: []string{"m0", "m1"}}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != meshview.GraphPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(g)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestMeshStatusPrintsTablesFromTheFirstEndpointThatAnswers(t *testing.T) {
	srv := graphServer(t)
	notMeshetcd := httptest.NewServer(http.NotFoundHandler())
	defer notMeshetcd.Close()
	code, out, errOut := runArgs("mesh", "status", "--endpoints", notMeshetcd.URL+","+strings.TrimPrefix(srv.URL, "http://"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Leader: m0 (viewed from m1", "m0 <-> m1  up", "m0 -> m1   1     direct"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}

	code, out, _ = runArgs("mesh", "status", "-w", "json", "--endpoints", srv.URL)
	var g meshview.Graph
	if code != exitOK || json.Unmarshal([]byte(out), &g) != nil || g.Leader != "m0" {
		t.Errorf("-w json: exit %d, output %q", code, out)
	}
}

func TestMeshStatusErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"mesh", "bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"mesh", "status", "--nope"}, exitUsage, "unknown flag: --nope"},
		{[]string{"mesh", "status", "-w", "yaml"}, exitUsage, "--write-out must be table or json"},
		{[]string{"mesh", "status", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"mesh", "status", "--endpoints", "127.0.0.1:1"}, exitError, "no endpoint answered"},
	} {
		code, _, errOut := runArgs(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	if code, out, _ := runArgs("mesh", "--help"); code != exitOK || !strings.Contains(out, "meshetcd mesh status") {
		t.Errorf("mesh --help: exit %d, %q", code, out)
	}
}

func TestMeshStatusOverHTTPS(t *testing.T) {
	plain := graphServer(t)
	srv := httptest.NewTLSServer(plain.Config.Handler)
	defer srv.Close()
	if code, _, errOut := runArgs("mesh", "status", "--endpoints", srv.URL); code != exitError || !strings.Contains(errOut, "certificate") {
		t.Errorf("unverified https endpoint: exit %d, %q; want a certificate error", code, errOut)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--cacert", ca}, {"--insecure-skip-tls-verify"}} {
		code, out, errOut := runArgs(append([]string{"mesh", "status", "--endpoints", srv.URL}, args...)...)
		if code != exitOK || !strings.Contains(out, "Leader: m0") {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errOut)
		}
	}
	if code, _, errOut := runArgs("mesh", "status", "--cert", ca); code != exitUsage || !strings.Contains(errOut, "--cert and --key go together") {
		t.Errorf("--cert alone: exit %d, %q", code, errOut)
	}
}
