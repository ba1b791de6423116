package grpcapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/kvstore"
)

// serveWithGateway is serveForTest plus etcd's JSON gateway dialing the
// same port, the way embed wires it.
func serveWithGateway(t *testing.T, f kvstore.API) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, err := NewGateway(ctx, l.Addr().String(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Logger: zap.NewNop(), Gateway: g}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, NewGRPCServer(f, cfg), NewHTTPHandler(f, cfg)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return")
		}
		if err := g.Close(); err != nil {
			t.Errorf("gateway close: %v", err)
		}
	})
	return l.Addr().String()
}

func TestGateway(t *testing.T) {
	f := newFakeStore(t)
	addr := serveWithGateway(t, f)
	hc := &http.Client{Timeout: testTimeout}
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := hc.Post("http://"+addr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s: decode: %v", path, err)
		}
		return resp.StatusCode, out
	}

	// base64("foo") = Zm9v, base64("bar") = YmFy
	code, out := post("/v3/kv/put", `{"key":"Zm9v","value":"YmFy"}`)
	if code != 200 || out["header"].(map[string]any)["revision"] != "2" {
		t.Fatalf("put: %d %v", code, out)
	}
	code, out = post("/v3beta/kv/range", `{"key":"Zm9v"}`)
	if code != 200 || out["count"] != "1" || out["kvs"].([]any)[0].(map[string]any)["value"] != "YmFy" {
		t.Fatalf("range via /v3beta: %d %v", code, out)
	}
	code, out = post("/v3/kv/put", `{"value":"YmFy"}`)
	if code != http.StatusBadRequest || out["message"] != "etcdserver: key is not provided" || out["code"] != float64(3) {
		t.Fatalf("empty key: %d %v", code, out)
	}
	code, out = post("/v3/maintenance/status", `{}`)
	if code != 200 || out["version"] != "3.7.3" {
		t.Fatalf("status: %d %v", code, out)
	}

	// A server stream through the gateway: Snapshot arrives as JSON lines
	// ({"result":{...}}), the last one carrying the 32-byte checksum.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v3/maintenance/snapshot", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var last struct {
		Result struct {
			Blob           []byte `json:"blob"`
			RemainingBytes string `json:"remaining_bytes"`
		} `json:"result"`
	}
	lines := 0
	for sc.Scan() {
		lines++
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("snapshot line %d: %v", lines, err)
		}
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if lines < 2 || len(last.Result.Blob) != 32 || last.Result.RemainingBytes != "" {
		t.Fatalf("snapshot via gateway: %d lines, last blob %d bytes, remaining %q", lines, len(last.Result.Blob), last.Result.RemainingBytes)
	}
}
