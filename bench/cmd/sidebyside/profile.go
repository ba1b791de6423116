package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// captureProfiles starts each system fresh with --enable-pprof (outside the measured
// rounds, so profiling never skews the table), runs the profile workload in a loop while
// /debug/pprof/profile records CPU for profileSeconds, then takes /debug/pprof/heap, and
// writes `go tool pprof -top` summaries next to the profiles.
func (s *state) captureProfiles(ctx context.Context) error {
	w := workloadByName(s.cfg.profileWorkload)
	if w == nil {
		return fmt.Errorf("unknown --profile-workload %q", s.cfg.profileWorkload)
	}
	total := s.totals[w.name]
	if total == 0 {
		total = max(w.minTotal, w.probe)
	}
	dir := filepath.Join(s.outDir, "profiles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []string
	for _, sys := range []*system{s.cand, s.base} {
		if err := s.profileOne(ctx, sys, w, total, dir); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", sys.name, err))
			logf("[profile] %s: %v", sys.name, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

func (s *state) profileOne(ctx context.Context, sys *system, w *workload, total int, dir string) error {
	if err := s.ensurePorts(); err != nil {
		return err
	}
	cl, err := s.startReady(ctx, sys, "profile", []string{"--enable-pprof"})
	if err != nil {
		return fmt.Errorf("start with --enable-pprof: %w", err)
	}
	defer cl.stop()
	target := cl.leader(ctx)
	tc, err := s.tls.clientConfig()
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	base := target.clientURL() + "/debug/pprof/"
	// Fail fast when the server has no pprof handler.
	if err := httpGet(ctx, hc, base+"cmdline", io.Discard, 5*time.Second); err != nil {
		return fmt.Errorf("no /debug/pprof: %w", err)
	}
	cpuPath := filepath.Join(dir, sys.name+"-cpu-"+w.name+".pb.gz")
	heapPath := filepath.Join(dir, sys.name+"-heap-"+w.name+".pb.gz")

	logf("[profile] %s: %ds CPU profile of %s (leader) under %s", sys.name, s.cfg.profileSeconds, target.name, w.name)
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(cpuPath)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		done <- httpGet(ctx, hc, fmt.Sprintf("%sprofile?seconds=%d", base, s.cfg.profileSeconds), f, time.Duration(s.cfg.profileSeconds+30)*time.Second)
	}()
	var cpuErr error
	runs := 0
loop:
	for {
		o := runBenchmark(ctx, s.cfg.benchBin, cl.endpoints(), w, total, s.cfg.runTimeout, s.tls.toolArgs())
		runs++
		saveRaw(filepath.Join(dir, fmt.Sprintf("%s-%s-run%d.txt", sys.name, w.name, runs)), o)
		if o.err != nil {
			cpuErr = <-done
			return fmt.Errorf("workload during profile: %v", o.err)
		}
		select {
		case cpuErr = <-done:
			break loop
		default:
		}
	}
	if cpuErr != nil {
		return fmt.Errorf("cpu profile: %w", cpuErr)
	}
	hf, err := os.Create(heapPath)
	if err != nil {
		return err
	}
	err = httpGet(ctx, hc, base+"heap", hf, 30*time.Second)
	hf.Close()
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	s.profiles = append(s.profiles, cpuPath, heapPath)
	for _, p := range []struct {
		path, name string
		args       []string
	}{
		{cpuPath, sys.name + "-cpu-" + w.name + ".top.txt", nil},
		{cpuPath, sys.name + "-cpu-cum-" + w.name + ".top.txt", []string{"-cum"}},
		{heapPath, sys.name + "-heap-inuse-" + w.name + ".top.txt", []string{"-sample_index=inuse_space"}},
		{heapPath, sys.name + "-heap-alloc-" + w.name + ".top.txt", []string{"-sample_index=alloc_space"}},
	} {
		out := filepath.Join(dir, p.name)
		args := append([]string{"tool", "pprof", "-top", "-nodecount=40"}, p.args...)
		args = append(args, sys.bin, p.path)
		b, err := exec.CommandContext(ctx, s.cfg.goBin, args...).CombinedOutput()
		if err != nil {
			b = append(b, []byte("\n# go tool pprof failed: "+err.Error()+"\n")...)
		}
		_ = os.WriteFile(out, b, 0o644)
		s.profiles = append(s.profiles, out)
	}
	logf("[profile] %s: wrote %s and %s (+ .top.txt), %d workload runs", sys.name, cpuPath, heapPath, runs)
	return nil
}

func httpGet(ctx context.Context, client *http.Client, url string, w io.Writer, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
