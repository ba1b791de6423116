package main

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// summary is one report block printed by etcd's benchmark tool
// (go.etcd.io/etcd/pkg/v3/report, report.String). All times are in seconds.
//
// The tool prints, per block:
//
//	Summary:
//	  Total:	0.2713 secs.
//	  Slowest:	... secs.
//	  Fastest:	... secs.
//	  Average:	... secs.
//	  Stddev:	... secs.
//	  Requests/sec:	1842.7021
//	Response time histogram: ...
//	Latency distribution:
//	  10% in 0.0004 secs.
//	  ...
//	  99.9% in ... secs.
//	Error distribution:          (only when a request failed)
//	  [12]	context deadline exceeded
//
// A percentile line is omitted when its value is 0, the whole Summary part is omitted
// when no request succeeded (only "Error distribution" remains), and watch-latency
// prints two blocks, headed "Put summary:" and "Watch events summary:".
type summary struct {
	Total, Slowest, Fastest, Average, Stddev float64
	RPS                                      float64
	Pctl                                     map[string]float64 // "50" -> seconds, "99.9" -> seconds
	Errors                                   int                // requests in the error distribution
	ErrorKinds                               []string
	HasSummary                               bool
}

func (s *summary) p(q string) (float64, bool) {
	v, ok := s.Pctl[q]
	return v, ok
}

var (
	reField  = regexp.MustCompile(`^\s*(Total|Slowest|Fastest|Average|Stddev|Requests/sec):\s*([-+0-9.eE]+|NaN|[-+]?Inf)`)
	rePctl   = regexp.MustCompile(`^\s*([0-9.]+)% in ([-+0-9.eE]+) secs`)
	reErrRow = regexp.MustCompile(`^\s*\[(\d+)\]\s*(.*)$`)
)

// parseBlocks splits the tool's stdout into named report blocks. A block starts at a line
// that ends in "summary:" (case-insensitive): "Summary:", "Put summary:", "Watch events
// summary:". Text that is not part of a block (progress, "bench with linearizable range")
// is ignored. An "Error distribution:" with no preceding summary forms a block named
// "summary" of its own.
func parseBlocks(out string) (map[string]*summary, []string, error) {
	blocks := map[string]*summary{}
	var order []string
	var cur *summary
	var curName string
	inErrors, inPctl := false, false

	start := func(name string) {
		// "Put summary:" is followed by a blank line and "Summary:"; the named header
		// wins and the inner "Summary:" continues the same block.
		if name == "summary" && cur != nil && !cur.HasSummary && curName != "summary" {
			cur.HasSummary = true
			return
		}
		cur = &summary{Pctl: map[string]float64{}}
		if name == "summary" {
			cur.HasSummary = true
		}
		curName = name
		for _, ok := blocks[name]; ok; _, ok = blocks[name] {
			name += "'"
			curName = name
		}
		blocks[name] = cur
		order = append(order, name)
	}

	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		trim := strings.TrimSpace(line)
		low := strings.ToLower(trim)
		switch {
		case strings.HasSuffix(low, "summary:"):
			name := strings.TrimSpace(strings.TrimSuffix(low, ":"))
			start(name)
			inErrors, inPctl = false, false
			continue
		case low == "error distribution:":
			if cur == nil {
				start("summary")
				cur.HasSummary = false
			}
			inErrors, inPctl = true, false
			continue
		case low == "latency distribution:":
			inPctl, inErrors = true, false
			continue
		case low == "response time histogram:":
			inPctl, inErrors = false, false
			continue
		case trim == "":
			if inErrors || inPctl {
				inErrors, inPctl = false, false
			}
			continue
		}
		if cur == nil {
			continue
		}
		if inErrors {
			if m := reErrRow.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				cur.Errors += n
				cur.ErrorKinds = append(cur.ErrorKinds, fmt.Sprintf("%d× %s", n, strings.TrimSpace(m[2])))
			}
			continue
		}
		if m := rePctl.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err == nil {
				// The tool prints the percentile with %v: "10", "50", "99", "99.9".
				cur.Pctl[m[1]] = v
			}
			continue
		}
		if m := reField.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				continue
			}
			switch m[1] {
			case "Total":
				cur.Total = v
			case "Slowest":
				cur.Slowest = v
			case "Fastest":
				cur.Fastest = v
			case "Average":
				cur.Average = v
			case "Stddev":
				cur.Stddev = v
			case "Requests/sec":
				cur.RPS = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(blocks) == 0 {
		return nil, nil, fmt.Errorf("no report block in benchmark output")
	}
	return blocks, order, nil
}

// pickBlock returns the block that carries a workload's result: "watch events summary"
// for watch-latency, otherwise the last block.
func pickBlock(blocks map[string]*summary, order []string, want string) (*summary, error) {
	if want != "" {
		if b, ok := blocks[want]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("benchmark output has no %q block (have %v)", want, order)
	}
	return blocks[order[len(order)-1]], nil
}
