package main

// The mesh section of a run: what encryption, a relay and a cut link cost.
// etcd has no mesh, so these are meshetcd against itself, from the Go
// benchmarks beside the code (meshconn and integration), each repeated
// up to 3 times (one per round); the two sides of a ratio run back to back
// inside one repetition, so ratios pair runs that saw similar machine load.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// meshBench is one `go test -bench` invocation of the mesh section.
type meshBench struct {
	pkg, pattern, benchtime string
}

var meshBenches = []meshBench{
	{"./meshconn/", "^BenchmarkDatagramThroughput$", "100000x"},
	{"./integration/", "^BenchmarkCluster3Put$", "3000x"},
	{"./integration/", "^BenchmarkSnapshotCatchUp$", "1x"},
}

// meshRatio is one row: numerator over denominator, both sub-benchmark
// names (without the -GOMAXPROCS suffix) and the metric compared.
type meshRatio struct {
	label, num, den, unit, target string
}

var meshRatios = []meshRatio{
	{"direct link, 100 B datagrams: encrypted / plaintext", "BenchmarkDatagramThroughput/direct/encrypted/100B", "BenchmarkDatagramThroughput/direct/plain/100B", "MB/s", "≥ 0.90"},
	{"direct link, 4 KiB datagrams: encrypted / plaintext", "BenchmarkDatagramThroughput/direct/encrypted/4KiB", "BenchmarkDatagramThroughput/direct/plain/4KiB", "MB/s", "≥ 0.90"},
	{"one relay, 100 B datagrams: encrypted / plaintext", "BenchmarkDatagramThroughput/relay/encrypted/100B", "BenchmarkDatagramThroughput/relay/plain/100B", "MB/s", "≥ 0.80"},
	{"one relay, 4 KiB datagrams: encrypted / plaintext", "BenchmarkDatagramThroughput/relay/encrypted/4KiB", "BenchmarkDatagramThroughput/relay/plain/4KiB", "MB/s", "≥ 0.80"},
	{"one relay vs direct, 4 KiB encrypted", "BenchmarkDatagramThroughput/relay/encrypted/4KiB", "BenchmarkDatagramThroughput/direct/encrypted/4KiB", "MB/s", ""},
	// CPU per datagram (both ends are one process) moves far less with the
	// machine's load than throughput does: what encryption costs.
	{"direct link, 4 KiB datagrams: CPU per datagram, encrypted / plaintext", "BenchmarkDatagramThroughput/direct/encrypted/4KiB", "BenchmarkDatagramThroughput/direct/plain/4KiB", "cpu-µs/op", ""},
	{"one relay, 4 KiB datagrams: CPU per datagram, encrypted / plaintext", "BenchmarkDatagramThroughput/relay/encrypted/4KiB", "BenchmarkDatagramThroughput/relay/plain/4KiB", "cpu-µs/op", ""},
	{"3 members, put: leader–follower link cut / connected", "BenchmarkCluster3Put/leader-follower-link-cut", "BenchmarkCluster3Put/connected", "req/s", "≥ 0.90"},
	{"snapshot catch-up of a ~390 MiB backend: meshetcd / etcd (time)", "BenchmarkSnapshotCatchUp/meshetcd", "BenchmarkSnapshotCatchUp/etcd", "s/catch-up", "≤ 1.00"},
}

// runMeshSection runs the mesh benchmarks and returns the markdown
// section; their raw output goes to rawDir. A run that fails is left out
// whole (both sides of its ratios, so the repetitions that remain still
// pair up) and reported in failed; the others still make the table.
func runMeshSection(ctx context.Context, goBin, candBin, rawDir string, rounds int) (md string, failed []error) {
	var all strings.Builder
	// One `go test` per benchmark and repetition, not -count: with -count a
	// benchmark's sub-benchmarks each run count times in a row, so the two
	// sides of a ratio would not see the same machine load.
	for rep := 1; rep <= rounds; rep++ {
		for _, mb := range meshBenches {
			out, err := runMeshBench(ctx, goBin, candBin, rawDir, mb, rep)
			if err != nil {
				failed = append(failed, fmt.Errorf("%w (repetition %d left out of the mesh table)", err, rep))
				continue
			}
			all.Write(out)
		}
	}
	samples := parseGoBench(strings.NewReader(all.String()))
	var b strings.Builder
	writeMeshTable(&b, samples, rounds)
	return b.String(), failed
}

// runMeshBench runs one benchmark once and saves its output.
func runMeshBench(ctx context.Context, goBin, candBin, rawDir string, mb meshBench, rep int) ([]byte, error) {
	args := []string{"test", "-count", "1", "-run", "^$", "-bench", mb.pattern, "-benchtime", mb.benchtime, mb.pkg}
	logf("mesh: %s %s", goBin, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, goBin, args...)
	// The integration harness uses these binaries instead of building its own.
	cmd.Env = append(os.Environ(), "MESHETCD_BIN="+candBin)
	if etcdctl, err := filepath.Abs(filepath.Join("bin", "etcdctl")); err == nil {
		if _, err := os.Stat(etcdctl); err == nil {
			cmd.Env = append(cmd.Env, "ETCDCTL_BIN="+etcdctl)
		}
	}
	out, err := cmd.CombinedOutput()
	name := strings.Trim(regexp.MustCompile(`\W+`).ReplaceAllString(mb.pattern, "-"), "-")
	saveMeshRaw(filepath.Join(rawDir, fmt.Sprintf("mesh-%s-%d.txt", name, rep)), out)
	if err != nil {
		return nil, fmt.Errorf("mesh benchmark %s %s: %w", mb.pkg, mb.pattern, err)
	}
	return out, nil
}

func saveMeshRaw(path string, out []byte) {
	if err := os.WriteFile(path, out, 0o644); err != nil {
		logf("mesh: %v", err)
	}
}

// benchSamples maps a benchmark name (without the -N suffix) to its
// metrics, one value per repetition in output order.
type benchSamples map[string]map[string][]float64

var reBenchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseGoBench reads `go test -bench` output. Each result line is a
// name, an iteration count, then value-unit pairs; a line without req/s
// gets 1e9/ns_op, the throughput of a benchmark whose op is one request.
func parseGoBench(r io.Reader) benchSamples {
	s := benchSamples{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := reBenchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		metrics := s[m[1]]
		if metrics == nil {
			metrics = map[string][]float64{}
			s[m[1]] = metrics
		}
		line := map[string]float64{}
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				line[f[i+1]] = v
			}
		}
		if _, ok := line["req/s"]; !ok && line["ns/op"] > 0 {
			line["req/s"] = 1e9 / line["ns/op"]
		}
		for unit, v := range line {
			metrics[unit] = append(metrics[unit], v)
		}
	}
	return s
}

// writeMeshTable writes one row per ratio: both sides' medians, the
// median of the per-repetition ratios and their range.
func writeMeshTable(w io.Writer, s benchSamples, rounds int) {
	fmt.Fprintf(w, "\n## Mesh: encryption, relays, cut links (meshetcd alone)\n\n")
	fmt.Fprintf(w, "In-process Go benchmarks, %d repetitions; each ratio pairs the two sides of one repetition (run back to back). "+
		"Datagram throughput: meshconn `BenchmarkDatagramThroughput` over loopback TCP (512 datagrams in flight; a relay is a third router in between). "+
		"Cut link: integration `BenchmarkCluster3Put` (3 in-process members, 100 clients, fsync on; the link between the leader and one follower cut, so the mesh relays). "+
		"Snapshot catch-up: integration `BenchmarkSnapshotCatchUp` (3 processes of each system; a follower down while 6,000 × 64 KiB are written, timed from its restart until it serves every key; needs bin/etcd).\n\n", rounds)
	fmt.Fprintf(w, "| figure | numerator (median) | denominator (median) | ratio (median) | ratio range | target |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---|\n")
	for _, r := range meshRatios {
		num, den := s[r.num][r.unit], s[r.den][r.unit]
		var ratios []float64
		for i := range min(len(num), len(den)) {
			if den[i] > 0 {
				ratios = append(ratios, num[i]/den[i])
			}
		}
		fmt.Fprintf(w, "| %s | %s %s | %s %s | %s | %s | %s |\n", r.label,
			fmtNum(median(num)), r.unit, fmtNum(median(den)), r.unit,
			fmtRatio(median(ratios)), fmtRatioSpread(ratios), r.target)
	}
}

// runMesh runs the mesh section unless --mesh=false or the candidate is
// etcd itself (bench-self). A failure becomes a note, not a failed run.
func (s *state) runMesh(ctx context.Context) {
	if !s.cfg.mesh || sameFile(s.cfg.etcdBin, s.cand.orig) {
		return
	}
	// At most 3 repetitions: the cluster and snapshot benchmarks start
	// clusters and take about two minutes per repetition.
	md, failed := runMeshSection(ctx, s.cfg.goBin, s.cand.orig, s.rawDir, min(s.cfg.rounds, 3))
	for _, err := range failed {
		s.notes = append(s.notes, err.Error())
		logf("%v", err)
	}
	s.meshMD = md
	fmt.Print(md)
}
