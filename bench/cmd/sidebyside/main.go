// Command sidebyside runs etcd's own benchmark tool against a fresh etcd and a fresh
// meshetcd started with the same flags, alternating between them round after round,
// and reports each system's median, their ratio and the spread, from one run on one
// machine. Absolute numbers from shared machines are noise; ratios from the same run
// are what it is for. See bench/README.md.
//
//	sidebyside --etcd-bin bin/etcd --meshetcd-bin bin/meshetcd --benchmark-bin bin/benchmark [--quick]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	etcdBin, candBin, candName, benchBin, goBin string
	members, rounds                             int
	duration                                    time.Duration
	quick                                       bool
	growth                                      bool
	totals                                      string
	workloads                                   string
	out                                         string
	portBase                                    int
	runTimeout, readyTimeout                    time.Duration
	profile                                     bool
	profileWorkload                             string
	profileSeconds                              int
	serverArgs                                  string
	keepData                                    bool
	tls                                         bool
	lockPath                                    string
	mesh                                        bool
}

func main() {
	var c config
	flag.StringVar(&c.etcdBin, "etcd-bin", "bin/etcd", "baseline server binary (etcd 3.7.3)")
	flag.StringVar(&c.candBin, "meshetcd-bin", "bin/meshetcd", "candidate server binary")
	flag.StringVar(&c.candName, "candidate-name", "", "label of the candidate (default: meshetcd, or etcd-b when it is the same binary as --etcd-bin)")
	flag.StringVar(&c.benchBin, "benchmark-bin", "bin/benchmark", "etcd's benchmark tool")
	flag.StringVar(&c.goBin, "go", "go", "go command, for `go tool pprof -top`")
	flag.IntVar(&c.members, "members", 1, "members per cluster (static bootstrap with --initial-cluster)")
	flag.IntVar(&c.rounds, "rounds", 0, "rounds; each round starts both systems fresh and runs every workload on each (default 3 with --quick, else 5)")
	flag.DurationVar(&c.duration, "duration", 0, "target length of one workload run; request totals are calibrated on the baseline to fill it (default 2.5s with --quick, else 8s)")
	flag.BoolVar(&c.quick, "quick", false, "short smoke run (~2-3 minutes)")
	flag.StringVar(&c.totals, "totals", "", "fixed request totals instead of calibration, e.g. put-1=2000,put-100=20000 (watch-latency: number of puts)")
	flag.StringVar(&c.workloads, "workloads", "", "comma-separated subset of workloads (default all: "+workloadNames()+")")
	flag.StringVar(&c.out, "out", "", "results directory (default bench/results/<UTC timestamp>)")
	flag.IntVar(&c.portBase, "port-base", 27400, "first port to try; ports stay inside 27000-27999")
	flag.DurationVar(&c.runTimeout, "run-timeout", 0, "kill a benchmark run after this long (default max(30×duration, 60s); fill-1m gets at least 17m)")
	flag.DurationVar(&c.readyTimeout, "ready-timeout", 30*time.Second, "how long a fresh cluster may take to elect a leader and accept a write")
	flag.BoolVar(&c.profile, "profile", false, "after the rounds, capture CPU and heap profiles of each system under one workload via /debug/pprof (--enable-pprof)")
	flag.StringVar(&c.profileWorkload, "profile-workload", "", "workload to run while profiling (default: the one in --workloads if it names only one, else put-100)")
	flag.IntVar(&c.profileSeconds, "profile-seconds", 0, "CPU profile length (default 5 with --quick, else 15)")
	flag.StringVar(&c.serverArgs, "server-args", "", "extra flags for every server of both systems (space-separated)")
	flag.BoolVar(&c.tls, "tls", false, "client TLS for both systems: https:// client URLs, one generated CA and server certificate, --client-cert-auth; the tool connects with --cacert/--cert/--key")
	flag.BoolVar(&c.growth, "growth", false, "also run the growth workloads (value size, key count, watchers: "+growthNames()+") after the standard ones")
	flag.BoolVar(&c.keepData, "keep-data", false, "keep the servers' data dirs under <out>/data")
	flag.StringVar(&c.lockPath, "lock", filepath.Join(os.TempDir(), "meshetcd-bench.lock"), "lock file that keeps two benchmark runs on one machine from overlapping (empty: no lock)")
	flag.BoolVar(&c.mesh, "mesh", true, "after the rounds, run the mesh benchmarks (encrypted vs plaintext links, direct and via a relay; 3 members with a cut link) and add their section")
	flag.Parse()

	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		var skip skipError
		if errors.As(err, &skip) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

func workloadNames() string {
	var n []string
	for _, w := range append(allWorkloads[:len(allWorkloads):len(allWorkloads)], growthWorkloads...) {
		n = append(n, w.name)
	}
	return strings.Join(n, ",")
}

func growthNames() string {
	var n []string
	for _, w := range growthWorkloads {
		n = append(n, w.name)
	}
	return strings.Join(n, ",")
}

// skipError ends a run that cannot compare anything yet, without failing `make bench`.
type skipError struct{ msg string }

func (e skipError) Error() string { return "SKIP: " + e.msg }

type state struct {
	cfg      config
	base     *system
	cand     *system
	ws       []*workload
	totals   map[string]int
	outDir   string
	rawDir   string
	logDir   string
	dataDir  string
	portBase int
	runs     []runResult
	rounds   []roundResult
	notes    []string
	started  time.Time
	profiles []string
	tls      *tlsFiles // nil without --tls
	meshMD   string    // the mesh section (mesh.go), empty without --mesh
}

func run(c config) error {
	if c.rounds == 0 {
		c.rounds = map[bool]int{true: 3, false: 5}[c.quick]
	}
	if c.duration == 0 {
		c.duration = map[bool]time.Duration{true: 2500 * time.Millisecond, false: 8 * time.Second}[c.quick]
	}
	if c.runTimeout == 0 {
		c.runTimeout = max(30*c.duration, 60*time.Second)
	}
	if c.profileSeconds == 0 {
		c.profileSeconds = map[bool]int{true: 5, false: 15}[c.quick]
	}
	if c.members < 1 || c.members > 10 {
		return fmt.Errorf("--members must be 1..10")
	}
	for _, p := range []*string{&c.etcdBin, &c.candBin, &c.benchBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%s: %w (run `make etcd benchmark-tool build`)", *p, err)
		}
		*p = abs
	}
	if c.candName == "" {
		c.candName = "meshetcd"
		if sameFile(c.etcdBin, c.candBin) {
			c.candName = "etcd-b"
		}
	}
	s := &state{cfg: c, started: time.Now()}
	s.base = &system{name: "etcd", bin: c.etcdBin, index: 0}
	s.cand = &system{name: c.candName, bin: c.candBin, index: 1}
	if s.base.name == s.cand.name {
		return fmt.Errorf("--candidate-name must differ from %q", s.base.name)
	}
	if c.workloads == "" {
		s.ws = allWorkloads
		if c.growth {
			s.ws = append(s.ws[:len(s.ws):len(s.ws)], growthWorkloads...)
		}
	} else {
		for _, n := range strings.Split(c.workloads, ",") {
			w := workloadByName(strings.TrimSpace(n))
			if w == nil {
				return fmt.Errorf("unknown workload %q (have %s)", n, workloadNames())
			}
			s.ws = append(s.ws, w)
		}
	}
	if c.profileWorkload == "" {
		// Profile what was measured when that is one workload: a
		// WORKLOADS=txn-put run should explain txn-put.
		c.profileWorkload = "put-100"
		if len(s.ws) == 1 {
			c.profileWorkload = s.ws[0].name
		}
	}
	s.totals = map[string]int{}
	if c.totals != "" {
		for _, kv := range strings.Split(c.totals, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil || n <= 0 || workloadByName(k) == nil {
				return fmt.Errorf("bad --totals entry %q", kv)
			}
			s.totals[k] = n
		}
	}
	if c.out == "" {
		c.out = filepath.Join("bench", "results", s.started.UTC().Format("20060102T150405Z"))
		if c.members > 1 {
			c.out += fmt.Sprintf("-%dm", c.members)
		}
	}
	s.cfg = c
	s.outDir = c.out
	s.rawDir = filepath.Join(c.out, "raw")
	s.logDir = filepath.Join(c.out, "logs")
	s.dataDir = filepath.Join(c.out, "data")
	for _, d := range []string{s.rawDir, s.logDir, s.dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if strings.HasPrefix(filepath.Clean(c.out), filepath.Join("bench", "results")) {
		latest := filepath.Join("bench", "results", "latest")
		_ = os.Remove(latest)
		_ = os.Symlink(filepath.Base(c.out), latest)
	}

	if c.tls {
		t, err := newTLSFiles(filepath.Join(s.dataDir, "tls"))
		if err != nil {
			return fmt.Errorf("generating TLS certificates: %w", err)
		}
		s.tls = t
	}

	// Run private copies: others rebuild bin/meshetcd and bin/etcd while we measure,
	// and every round must run the same binary.
	for _, sys := range []*system{s.base, s.cand} {
		cp := filepath.Join(s.dataDir, "bin", sys.name)
		sum, err := copyExecutable(sys.bin, cp)
		if err != nil {
			return err
		}
		sys.orig, sys.bin, sys.sha = sys.bin, cp, sum
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if c.lockPath != "" {
		unlock, err := lockMachine(ctx, c.lockPath)
		if err != nil {
			return err
		}
		defer unlock()
	}

	pb, err := pickPortBase(c.portBase, c.members)
	if err != nil {
		return err
	}
	s.portBase = pb
	logf("results in %s; %d member(s) per system, %d rounds, ~%v per run, ports from %d", s.outDir, c.members, c.rounds, c.duration, pb)

	err = s.execute(ctx)
	if werr := s.writeResults(); werr != nil && err == nil {
		err = werr
	}
	if !c.keepData {
		_ = os.RemoveAll(s.dataDir)
	}
	return err
}

func (s *state) execute(ctx context.Context) error {
	if err := s.calibrate(ctx); err != nil {
		return err
	}
	for r := 1; r <= s.cfg.rounds; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.round(ctx, r); err != nil {
			return err
		}
	}
	s.runMesh(ctx)
	if s.cfg.profile {
		if err := s.captureProfiles(ctx); err != nil {
			s.notes = append(s.notes, "profiles: "+err.Error())
			logf("profiles: %v", err)
		}
	}
	return nil
}

// calibrate sizes each workload's request total to fill cfg.duration on the baseline,
// once, on a throwaway baseline cluster, so both systems get identical totals.
func (s *state) calibrate(ctx context.Context) error {
	var need []*workload
	for _, w := range s.ws {
		if _, ok := s.totals[w.name]; ok {
			continue
		}
		if w.paced {
			s.totals[w.name] = max(w.minTotal, int(s.cfg.duration.Seconds()*watchRate))
			continue
		}
		if w.fixed > 0 {
			s.totals[w.name] = map[bool]int{true: w.fixed / 10, false: w.fixed}[s.cfg.quick]
			continue
		}
		need = append(need, w)
	}
	if len(need) == 0 {
		return nil
	}
	if err := s.ensurePorts(); err != nil {
		return err
	}
	cl, err := s.startReady(ctx, s.base, "calib", nil)
	if err != nil {
		return fmt.Errorf("baseline does not start: %w", err)
	}
	defer cl.stop()
	for _, w := range need {
		o := runBenchmark(ctx, s.cfg.benchBin, cl.endpoints(), w, w.probe, s.cfg.runTimeout, s.tls.toolArgs())
		saveRaw(filepath.Join(s.rawDir, fmt.Sprintf("calib-%s-%s.txt", s.base.name, w.name)), o)
		if o.err != nil {
			return fmt.Errorf("calibration %s on %s: %w", w.name, s.base.name, o.err)
		}
		t := roundTotal(o.sum.RPS*s.cfg.duration.Seconds(), w.minTotal)
		s.totals[w.name] = t
		logf("calibrated %-13s %8.0f req/s on %s -> total %d", w.name, o.sum.RPS, s.base.name, t)
	}
	return nil
}

// roundTotal rounds to two significant digits, at least min.
func roundTotal(x float64, min int) int {
	if x < float64(min) || math.IsNaN(x) {
		return min
	}
	p := math.Pow(10, math.Floor(math.Log10(x))-1)
	return max(min, int(math.Round(x/p)*p))
}

// ensurePorts moves to another port block when someone took ours since the last check.
// Call it only while none of our servers runs.
func (s *state) ensurePorts() error {
	if portsFree(s.portBase, s.cfg.members) {
		return nil
	}
	pb, err := pickPortBase(27000, s.cfg.members)
	if err != nil {
		return err
	}
	logf("ports from %d are taken now; moving to %d", s.portBase, pb)
	s.portBase = pb
	return nil
}

func (s *state) startReady(ctx context.Context, sys *system, tag string, extra []string) (*cluster, error) {
	args := append(strings.Fields(s.cfg.serverArgs), extra...)
	cl, err := startCluster(sys, s.cfg.members, s.portBase, s.dataDir, s.logDir, tag, args, s.tls)
	if err != nil {
		return nil, err
	}
	if err := cl.waitReady(ctx, s.cfg.readyTimeout, seedKey, "bar"); err != nil {
		cl.stop()
		return nil, err
	}
	return cl, nil
}

// round starts both systems fresh and runs every workload on each, alternating.
// Odd rounds run the baseline first, even rounds the candidate (ABBA), so neither
// system always runs on a cache or a CPU the other has just warmed.
func (s *state) round(ctx context.Context, r int) error {
	tag := fmt.Sprintf("r%d", r)
	if err := s.ensurePorts(); err != nil {
		return err
	}
	clusters := map[*system]*cluster{}
	for _, sys := range []*system{s.base, s.cand} {
		cl, err := s.startReady(ctx, sys, tag, nil)
		if err != nil {
			if sys == s.base {
				for _, c := range clusters {
					c.stop()
				}
				return fmt.Errorf("baseline: %w", err)
			}
			if s.cfg.members > 1 && r == 1 {
				s.notes = append(s.notes, fmt.Sprintf("%s cannot form a %d-member cluster yet: %v", sys.name, s.cfg.members, oneLine(err, 2000)))
				for _, c := range clusters {
					c.stop()
				}
				return skipError{fmt.Sprintf("%s cannot form a %d-member cluster yet (%v)", sys.name, s.cfg.members, oneLine(err, 400))}
			}
			if r == 1 {
				for _, c := range clusters {
					c.stop()
				}
				s.notes = append(s.notes, fmt.Sprintf("%s does not start: %s", sys.name, oneLine(err, 2000)))
				return fmt.Errorf("%s does not start: %w", sys.name, err)
			}
			logf("[%s] %s failed to start: %v", tag, sys.name, err)
			s.rounds = append(s.rounds, roundResult{Round: r, System: sys.name, Err: firstLine(err)})
			for _, w := range s.ws {
				s.runs = append(s.runs, runResult{Round: r, System: sys.name, Workload: w.name, Err: "server did not start"})
			}
			continue
		}
		clusters[sys] = cl
	}
	defer func() {
		for _, c := range clusters {
			c.stop()
			if !s.cfg.keepData {
				_ = os.RemoveAll(c.dataDir)
			}
		}
	}()
	order := []*system{s.base, s.cand}
	if r%2 == 0 {
		order = []*system{s.cand, s.base}
	}
	peaks := map[*system]int64{}
	n := 0
	restAfter := s.restAfter()
	var rest map[*system]int64
	for _, w := range s.ws {
		for _, sys := range order {
			cl := clusters[sys]
			if cl == nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			n++
			res := s.measure(ctx, cl, w, r, n)
			peaks[sys] = max(peaks[sys], res.PeakRSSKB)
			s.runs = append(s.runs, res)
		}
		if w == restAfter {
			rest = s.restingRSS(ctx, clusters)
		}
	}
	for _, sys := range []*system{s.base, s.cand} {
		cl := clusters[sys]
		if cl == nil {
			continue
		}
		rr := roundResult{RestRSSKB: rest[sys], Round: r, System: sys.name, ReadySec: cl.ready.Seconds(), Members: cl.perMember()}
		cpu, hwm, err := cl.usage()
		if err != nil {
			rr.Err = firstLine(err)
		} else {
			rr.OK, rr.CPU, rr.PeakRSSKB = true, cpu, max(hwm, peaks[sys])
		}
		s.rounds = append(s.rounds, rr)
		logf("[%s] %-8s ready in %.2fs, round CPU %.2fs, peak RSS %.0f MiB", tag, sys.name, rr.ReadySec, rr.CPU, float64(rr.PeakRSSKB)/1024)
	}
	return nil
}

// fixedRunTimeout is the least time a run with a fixed total gets: a
// million puts at 1,000 req/s.
const fixedRunTimeout = 17 * time.Minute

// restSettle is how long both systems sit idle before their resting RSS is
// read: long enough for the Go runtime's background scavenger (the same in
// both) to hand back what the last run's garbage left, shorter than the
// runtime's forced GC every two minutes.
const restSettle = 10 * time.Second

// restAfter is the workload after which the resting RSS is read: the last
// of fill-1m and the overwrites of its keys (put-at-1m) that runs; nil
// without fill-1m.
func (s *state) restAfter() *workload {
	var last *workload
	for _, w := range s.ws {
		switch {
		case w.name == fillWorkload:
			last = w
		case w.name == "put-at-1m" && last != nil:
			last = w
		}
	}
	return last
}

// restingRSS reads every system's RSS once restSettle has passed with no
// load on either, after fill-1m's keys were written to both (the same data).
func (s *state) restingRSS(ctx context.Context, clusters map[*system]*cluster) map[*system]int64 {
	if len(clusters) == 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(restSettle):
	}
	rest := map[*system]int64{}
	for sys, cl := range clusters {
		rss, err := cl.restingRSS()
		if err != nil {
			logf("resting RSS of %s: %v", sys.name, err)
			continue
		}
		rest[sys] = rss
		logf("%-8s at rest %v after %s's keys: RSS %.0f MiB", sys.name, restSettle, fillWorkload, float64(rss)/1024)
	}
	return rest
}

func (s *state) measure(ctx context.Context, cl *cluster, w *workload, r, order int) runResult {
	res := runResult{Round: r, Order: order, System: cl.sys.name, Workload: w.name, Total: s.totals[w.name], Load1: load1()}
	if err := cl.checkAlive(); err != nil {
		res.Err = "server down: " + firstLine(err)
		logf("[r%d] %-8s %-13s %s", r, cl.sys.name, w.name, res.Err)
		return res
	}
	res.RSSReset = cl.resetPeakRSS()
	cpu0, _, err0 := cl.usage()
	timeout := s.cfg.runTimeout
	if w.fixed > 0 {
		// fill-1m's length is its fixed total at the server's rate, not
		// --duration: a million puts take minutes on a loaded machine.
		timeout = max(timeout, fixedRunTimeout)
	}
	o := runBenchmark(ctx, s.cfg.benchBin, cl.endpoints(), w, res.Total, timeout, s.tls.toolArgs())
	cpu1, hwm, err1 := cl.usage()
	saveRaw(filepath.Join(s.rawDir, fmt.Sprintf("r%d-%s-%s.txt", r, cl.sys.name, w.name)), o)
	res.Wall, res.ClientCPU = o.wall.Seconds(), o.clientCPU
	if err0 == nil && err1 == nil {
		res.ServerCPU, res.PeakRSSKB = cpu1-cpu0, hwm
	}
	if o.sum != nil {
		res.RPS, res.Avg, res.Errors = o.sum.RPS, o.sum.Average, o.sum.Errors
		res.P50, _ = o.sum.p("50")
		res.P99, _ = o.sum.p("99")
		res.Requests = int(math.Round(o.sum.RPS * o.sum.Total))
	}
	switch {
	case o.err != nil:
		res.Err = firstLine(o.err)
	case err1 != nil:
		res.Err = "server died during the run: " + firstLine(err1)
	case res.Errors > 0:
		res.Err = fmt.Sprintf("%d failed requests: %s", res.Errors, strings.Join(o.sum.ErrorKinds, "; "))
	default:
		res.OK = true
	}
	if res.OK {
		rate := fmt.Sprintf("%9.0f req/s", res.RPS)
		if w.paced {
			rate = fmt.Sprintf("%9s      ", "paced")
		}
		logf("[r%d] %-8s %-13s %s  p50 %7.3fms  p99 %7.3fms  cpu %5.2fs  rss %4.0fMiB  (%.1fs)",
			r, cl.sys.name, w.name, rate, res.P50*1e3, res.P99*1e3, res.ServerCPU, float64(res.PeakRSSKB)/1024, res.Wall)
	} else {
		logf("[r%d] %-8s %-13s FAILED: %s", r, cl.sys.name, w.name, res.Err)
	}
	return res
}

func (s *state) writeResults() error {
	ms := metricsFor(s.ws)
	rows := aggregate(ms, s.runs, s.rounds, s.base.name, s.cand.name)
	if len(s.runs) > 0 {
		fmt.Printf("\nratio = %s/%s medians; ↑ higher is better, ↓ lower is better; last column: ~ = within this run's noise\n\n", s.cand.name, s.base.name)
		writeTextTable(os.Stdout, rows, s.base.name, s.cand.name)
		fmt.Println()
	}
	if err := writeSummaryCSV(filepath.Join(s.outDir, "summary.csv"), rows, s.base.name, s.cand.name); err != nil {
		return err
	}
	if err := writeRunsCSV(filepath.Join(s.outDir, "runs.csv"), s.runs); err != nil {
		return err
	}
	if err := writeRoundsCSV(filepath.Join(s.outDir, "rounds.csv"), s.rounds); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(s.outDir, "results.md"))
	if err != nil {
		return err
	}
	defer f.Close()
	c := s.cfg
	fmt.Fprintf(f, "# %s vs %s, side by side\n\n", s.cand.name, s.base.name)
	fmt.Fprintf(f, "- started %s, took %s\n", s.started.UTC().Format(time.RFC3339), time.Since(s.started).Round(time.Second))
	fmt.Fprintf(f, "- host: %d CPUs (%s/%s), load average at the end: %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, readLoadavg())
	fmt.Fprintf(f, "- git: %s\n", gitDescribe())
	for _, sys := range []*system{s.base, s.cand} {
		fmt.Fprintf(f, "- %s: `%s` (%s, sha256 %s)\n", sys.name, sys.orig, version(sys.bin), sys.sha)
	}
	fmt.Fprintf(f, "- client: etcd benchmark tool `%s`\n", c.benchBin)
	fmt.Fprintf(f, "- %d member(s) per system on loopback, same flags for both (static bootstrap, fsync on, no --unsafe-no-fsync)", c.members)
	if c.serverArgs != "" {
		fmt.Fprintf(f, ", extra: `%s`", c.serverArgs)
	}
	fmt.Fprintf(f, "\n- %d rounds, fresh servers and data dirs each round; workloads alternate between the systems (odd rounds %s first, even rounds %s first)\n", c.rounds, s.base.name, s.cand.name)
	if s.tls != nil {
		fmt.Fprintf(f, "- %s\n", s.tls.describe())
	}
	fmt.Fprintf(f, "- request totals (calibrated to ~%v per run on %s unless fixed):", c.duration, s.base.name)
	for _, w := range s.ws {
		fmt.Fprintf(f, " %s=%d", w.name, s.totals[w.name])
	}
	fmt.Fprintf(f, "\n\nRatio = %s median / %s median. ↑ = higher is better (ratio > 1 favours %s), ↓ = lower is better (ratio < 1 favours %s). "+
		"Medians and min–max over rounds; per-round ratio pairs the two systems' runs of the same round. "+
		"Last column: better/worse when every round points the same way and the median ratio is ≥5%% from 1, ~ otherwise (within this run's noise). "+
		"This machine is shared and noisy: compare ratios from one run, not absolute numbers across runs.\n\n",
		s.cand.name, s.base.name, s.cand.name, s.cand.name)
	writeMarkdownTable(f, rows, s.base.name, s.cand.name)
	writeGrowthTable(f, rows, s.totals, s.base.name, s.cand.name)
	fmt.Fprintf(f, "\n## Workloads\n\n")
	for _, w := range s.ws {
		fmt.Fprintf(f, "- **%s**: %s. `benchmark --conns=%d --clients=%d %s`\n", w.name, w.desc, w.conns, w.clients, strings.Join(w.args(s.totals[w.name]), " "))
	}
	var failed []string
	for _, r := range s.runs {
		if !r.OK {
			failed = append(failed, fmt.Sprintf("round %d, %s, %s: %s", r.Round, r.System, r.Workload, r.Err))
		}
	}
	for _, r := range s.rounds {
		if !r.OK {
			failed = append(failed, fmt.Sprintf("round %d, %s: %s", r.Round, r.System, r.Err))
		}
	}
	if len(failed) > 0 || len(s.notes) > 0 {
		fmt.Fprintf(f, "\n## Failures and notes\n\n")
		for _, l := range append(s.notes, failed...) {
			fmt.Fprintf(f, "- %s\n", l)
		}
	}
	if len(s.profiles) > 0 {
		fmt.Fprintf(f, "\n## Profiles (%s, %ds, of the Raft leader)\n\n", c.profileWorkload, c.profileSeconds)
		for _, p := range s.profiles {
			if rel, err := filepath.Rel(s.outDir, p); err == nil {
				p = rel
			}
			fmt.Fprintf(f, "- `%s`\n", p)
		}
	}
	fmt.Fprint(f, s.meshMD)
	fmt.Fprintf(f, "\nFiles: summary.csv (this table), runs.csv (every run), rounds.csv (per round and system), raw/ (benchmark output), logs/ (server logs).\n")
	logf("wrote %s (results.md, summary.csv, runs.csv, rounds.csv)", s.outDir)
	return nil
}

func logf(format string, args ...any) {
	fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// oneLine flattens a multi-line error (one with a log tail) to at most n bytes.
func oneLine(err error, n int) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	s := strings.Join(parts, " | ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func firstLine(err error) string {
	l, _, _ := strings.Cut(err.Error(), "\n")
	return l
}

func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func readLoadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func version(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "version unknown"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return l
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// lockMachine takes an exclusive flock on path, waiting while another benchmark run
// (any engineer's, on this machine) holds it: two runs at once would measure each other.
func lockMachine(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited {
			holder, _ := os.ReadFile(path)
			logf("another benchmark run holds %s (%s); waiting for it to finish", path, strings.TrimSpace(string(holder)))
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d since %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339))), 0)
	return func() { _ = f.Truncate(0); f.Close() }, nil
}

// copyExecutable copies src to dst (mode 0755) and returns the first 12 hex digits of
// its sha256.
func copyExecutable(src, dst string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}
