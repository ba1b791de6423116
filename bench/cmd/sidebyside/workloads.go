package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// workload is one invocation of etcd's benchmark tool. Flags follow etcd's own
// performance documentation (Documentation/op-guide/performance.md): 8-byte keys,
// 256-byte values, sequential keys over a 100k key space.
type workload struct {
	name    string
	desc    string
	conns   int
	clients int
	// args returns the sub-command and its flags for a run of total requests.
	args func(total int) []string
	// block is the report block that holds the result ("" = the only/last one).
	block string
	// probe is the request count of the calibration run; 0 = not calibrated
	// (watch-latency is paced by --put-rate, its total follows from the duration).
	probe int
	// minTotal keeps every client busy for several requests.
	minTotal int
	// paced: throughput is set by the tool's rate limit, not by the server.
	paced bool
	// fixed is a request total that is part of what is measured (fill-1m
	// writes a million keys), never calibrated; --quick takes a tenth.
	fixed int
}

const (
	// fillWorkload writes the million keys the resting RSS is measured on.
	fillWorkload = "fill-1m"
	seedKey      = "foo"
	watchRate    = 100 // puts per second in watch-latency (the tool's default)
)

var allWorkloads = []*workload{
	{
		name: "put-1", desc: "put, 1 client over 1 connection (commit latency: WAL fsync + apply)",
		conns: 1, clients: 1, probe: 300, minTotal: 100,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=256", "--sequential-keys", "--key-space-size=100000", "--total=" + strconv.Itoa(n)}
		},
	},
	{
		name: "put-100", desc: "put, 100 clients over 10 connections (batched commits, throughput)",
		conns: 10, clients: 100, probe: 3000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=256", "--sequential-keys", "--key-space-size=100000", "--total=" + strconv.Itoa(n)}
		},
	},
	{
		name: "range-lin", desc: "linearizable get of one key, 100 clients over 10 connections (ReadIndex barrier + read)",
		conns: 10, clients: 100, probe: 5000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"range", seedKey, "--consistency=l", "--total=" + strconv.Itoa(n)}
		},
	},
	{
		name: "range-ser", desc: "serializable get of one key, 100 clients over 10 connections (local read, no consensus)",
		conns: 10, clients: 100, probe: 5000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"range", seedKey, "--consistency=s", "--total=" + strconv.Itoa(n)}
		},
	},
	{
		name: "txn-put", desc: "txn with one put, 100 clients over 10 connections",
		conns: 10, clients: 100, probe: 3000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"txn-put", "--key-size=8", "--val-size=256", "--txn-ops=1", "--key-space-size=100000", "--total=" + strconv.Itoa(n)}
		},
	},
	{
		name: "watch-latency", desc: "put→watch-event latency: 100 puts/s, 10 streams × 10 watchers on one key",
		conns: 10, clients: 10, block: "watch events summary", minTotal: 50, paced: true,
		args: func(n int) []string {
			return []string{"watch-latency", "--put-total=" + strconv.Itoa(n), "--put-rate=" + strconv.Itoa(watchRate),
				"--streams=10", "--watchers-per-stream=10", "--key-size=32", "--val-size=32"}
		},
	},
}

// growthWorkloads (--growth) show how cost grows: value size (put-100 is
// the 256 B row), key count (one key, then a million written and written
// over) and watchers on one key (watch-latency is the 100-watcher row).
// They run after the standard workloads, in this order, on the same
// servers: put-at-1m needs fill-1m's keys. A run's peak RSS starts from
// what the runs before it left (the Go runtime hands memory back slowly),
// so the watchers go first (their backlog is garbage once delivered), the
// resting RSS is read after the key-count rows, and the large values
// (whose last 5,000 raft entries both servers keep in memory) come last.
var growthWorkloads = []*workload{
	{
		name: "watch-10", desc: "put→watch-event latency: 100 puts/s, 1 stream × 10 watchers on one key",
		conns: 10, clients: 10, block: "watch events summary", minTotal: 50, paced: true,
		args: func(n int) []string {
			return []string{"watch-latency", "--put-total=" + strconv.Itoa(n), "--put-rate=" + strconv.Itoa(watchRate),
				"--streams=1", "--watchers-per-stream=10", "--key-size=32", "--val-size=32"}
		},
	},

	{
		name: "watch-10k", desc: "put→watch-event latency: 100 puts/s, 10 streams × 1000 watchers on one key",
		conns: 10, clients: 10, block: "watch events summary", minTotal: 50, paced: true,
		args: func(n int) []string {
			return []string{"watch-latency", "--put-total=" + strconv.Itoa(n), "--put-rate=" + strconv.Itoa(watchRate),
				"--streams=10", "--watchers-per-stream=1000", "--key-size=32", "--val-size=32"}
		},
	},

	{
		name: "put-keys-1", desc: "put, 100 clients, every put to the same key (MVCC revisions, one index entry)",
		conns: 10, clients: 100, probe: 3000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=256", "--key-space-size=1", "--total=" + strconv.Itoa(n)}
		},
	},

	{
		name: fillWorkload, desc: "put of 1,000,000 distinct keys (100,000 with --quick), 100 clients: throughput and RSS while the key count grows",
		conns: 10, clients: 100, fixed: 1000000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=256", "--sequential-keys", "--key-space-size=" + strconv.Itoa(n), "--total=" + strconv.Itoa(n)}
		},
	},

	{
		name: "put-at-1m", desc: "put over the keys fill-1m wrote (random keys of a 1,000,000 key space), 100 clients",
		conns: 10, clients: 100, probe: 3000, minTotal: 1000,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=256", "--key-space-size=1000000", "--total=" + strconv.Itoa(n)}
		},
	},

	{
		name: "put-64k", desc: "put of 64 KiB values, 100 clients over 10 connections",
		conns: 10, clients: 100, probe: 300, minTotal: 200,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=65536", "--sequential-keys", "--key-space-size=1000", "--total=" + strconv.Itoa(n)}
		},
	},

	{
		name: "put-1m", desc: "put of 1 MiB values, 10 clients over 10 connections",
		conns: 10, clients: 10, probe: 30, minTotal: 20,
		args: func(n int) []string {
			return []string{"put", "--key-size=8", "--val-size=1048576", "--sequential-keys", "--key-space-size=100", "--total=" + strconv.Itoa(n)}
		},
	},
}

func workloadByName(name string) *workload {
	for _, w := range append(allWorkloads[:len(allWorkloads):len(allWorkloads)], growthWorkloads...) {
		if w.name == name {
			return w
		}
	}
	return nil
}

// benchOutcome is one benchmark-tool run.
type benchOutcome struct {
	sum       *summary
	wall      time.Duration
	clientCPU float64
	stdout    string
	stderr    string
	err       error
}

// runBenchmark runs the tool once against eps. It fails on a non-zero exit, a timeout,
// unparsable output or a report with no successful request; request errors are
// returned in sum.Errors and judged by the caller. tlsArgs are the tool's
// --cacert/--cert/--key in a --tls run.
func runBenchmark(ctx context.Context, bin string, eps []string, w *workload, total int, timeout time.Duration, tlsArgs []string) benchOutcome {
	args := []string{
		"--endpoints=" + strings.Join(eps, ","),
		"--conns=" + strconv.Itoa(w.conns),
		"--clients=" + strconv.Itoa(w.clients),
		"--precise",
		"--dial-timeout=5s",
	}
	args = append(args, tlsArgs...)
	args = append(args, w.args(total)...)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = nil
	start := time.Now()
	err := cmd.Run()
	o := benchOutcome{wall: time.Since(start), stdout: out.String(), stderr: errb.String()}
	o.stdout = "# " + bin + " " + strings.Join(args, " ") + "\n" + o.stdout
	if cmd.ProcessState != nil {
		o.clientCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if rctx.Err() == context.DeadlineExceeded {
		o.err = fmt.Errorf("timed out after %v", timeout)
		return o
	}
	if err != nil {
		o.err = fmt.Errorf("benchmark: %v: %s", err, lastLines(o.stderr, 3))
		return o
	}
	blocks, order, perr := parseBlocks(out.String())
	if perr != nil {
		o.err = perr
		return o
	}
	s, perr := pickBlock(blocks, order, w.block)
	if perr != nil {
		o.err = perr
		return o
	}
	o.sum = s
	if !s.HasSummary {
		o.err = errors.New("no request succeeded: " + strings.Join(s.ErrorKinds, "; "))
	}
	return o
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		l := strings.TrimSpace(lines[i])
		// Skip the progress bar and gRPC connectivity chatter.
		if l == "" || strings.Contains(l, "INFO: [core]") || strings.Contains(l, "p/s") {
			continue
		}
		keep = append([]string{l}, keep...)
	}
	return strings.Join(keep, " | ")
}

func saveRaw(path string, o benchOutcome) {
	var b strings.Builder
	b.WriteString(o.stdout)
	b.WriteString("\n# --- stderr (progress bar and gRPC logs) ---\n")
	b.WriteString(o.stderr)
	if o.err != nil {
		fmt.Fprintf(&b, "\n# error: %v\n", o.err)
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o644)
}
