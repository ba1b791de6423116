package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/meshetcd/meshetcd/meshview"
)

// meshCommand is the first argument that selects the mesh subcommands
// (`meshetcd mesh status`); anything else runs the server with etcd's flags.
const meshCommand = "mesh"

const meshUsage = `Usage: meshetcd mesh status [flags]

Prints how the members are connected, as the mesh page at /mesh draws it:
the leader, the members, every link with its state and round-trip time,
and the path Raft traffic takes from the leader to each member.

Flags:
`

// runMesh runs `meshetcd mesh <subcommand>`; args follow "mesh".
func runMesh(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("meshetcd mesh status", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	endpoints := fs.StringSlice("endpoints", []string{"127.0.0.1:2379"}, "comma-separated client URLs (or host:port) of members to ask; the first that answers is used")
	timeout := fs.Duration("command-timeout", 5*time.Second, "timeout for asking each endpoint")
	writeOut := fs.StringP("write-out", "w", "table", "output format: table or json")
	var tlsInfo transport.TLSInfo
	fs.StringVar(&tlsInfo.TrustedCAFile, "cacert", "", "verify https endpoints with this CA bundle (as etcdctl)")
	fs.StringVar(&tlsInfo.CertFile, "cert", "", "client certificate for https endpoints (as etcdctl)")
	fs.StringVar(&tlsInfo.KeyFile, "key", "", "client key for https endpoints (as etcdctl)")
	fs.BoolVar(&tlsInfo.InsecureSkipVerify, "insecure-skip-tls-verify", false, "do not verify https endpoints' certificates (as etcdctl)")
	help := fs.BoolP("help", "h", false, "show this help")
	usage := func(w io.Writer) { fmt.Fprint(w, meshUsage+fs.FlagUsages()) }

	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return exitOK
	}
	if args[0] != "status" {
		fmt.Fprintf(stderr, "meshetcd mesh: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "meshetcd mesh status: %v\n", err)
		return exitUsage
	}
	if *help {
		usage(stdout)
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshetcd mesh status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *writeOut != "table" && *writeOut != "json" {
		fmt.Fprintf(stderr, "meshetcd mesh status: --write-out must be table or json, not %q\n", *writeOut)
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "meshetcd mesh status: --command-timeout must be positive\n")
		return exitUsage
	}

	if (tlsInfo.CertFile == "") != (tlsInfo.KeyFile == "") {
		fmt.Fprintf(stderr, "meshetcd mesh status: --cert and --key go together\n")
		return exitUsage
	}
	tlsCfg, err := tlsInfo.ClientConfig()
	if err != nil {
		fmt.Fprintf(stderr, "meshetcd mesh status: %v\n", err)
		return exitUsage
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	g, err := fetchGraph(context.Background(), hc, *endpoints, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "meshetcd mesh status: %v\n", err)
		return exitError
	}
	if *writeOut == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(g)
	} else {
		err = meshview.WriteTables(stdout, g)
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshetcd mesh status: %v\n", err)
		return exitError
	}
	return exitOK
}

// fetchGraph asks each endpoint in turn for its mesh graph and returns the
// first answer; the error names every endpoint that failed.
func fetchGraph(ctx context.Context, c *http.Client, endpoints []string, timeout time.Duration) (meshview.Graph, error) {
	var errs []error
	for _, ep := range endpoints {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep // etcdctl accepts bare host:port too
		}
		g, err := fetchGraphFrom(ctx, c, strings.TrimSuffix(ep, "/")+meshview.GraphPath, timeout)
		if err == nil {
			return g, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return meshview.Graph{}, errors.New("no endpoint given (--endpoints)")
	}
	return meshview.Graph{}, fmt.Errorf("no endpoint answered: %w", errors.Join(errs...))
}

func fetchGraphFrom(ctx context.Context, c *http.Client, u string, timeout time.Duration) (meshview.Graph, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return meshview.Graph{}, fmt.Errorf("%s: %w", u, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return meshview.Graph{}, err // *url.Error already names the URL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return meshview.Graph{}, fmt.Errorf("%s: %s (is it a meshetcd member?)", u, resp.Status)
	}
	var g meshview.Graph
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&g); err != nil {
		return meshview.Graph{}, fmt.Errorf("%s: decoding the mesh graph: %w", u, err)
	}
	return g, nil
}
