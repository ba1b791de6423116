package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/meshetcd/meshetcd/embed"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr, osEnv{}))
}

type osEnv struct{}

func (osEnv) Lookup(k string) (string, bool) { return os.LookupEnv(k) }
func (osEnv) Environ() []string              { return os.Environ() }

// run is main without os.Exit, so it can be tested.
func run(argv []string, stdout, stderr io.Writer, e env) int {
	if len(argv) > 1 && argv[1] == meshCommand {
		return runMesh(argv[2:], stdout, stderr)
	}
	o, err := parseFlags(argv[1:], e)
	if err != nil {
		fmt.Fprintf(stderr, "meshetcd: %v\n", err)
		fmt.Fprintln(stderr, "Run 'meshetcd --help' for the list of flags.")
		return exitUsage
	}
	if o.printHelp {
		fmt.Fprint(stdout, o.help)
		return exitOK
	}
	if o.printVersion {
		printVersion(stdout)
		return exitOK
	}

	lg, err := embed.NewLogger(o.cfg.LogLevel, o.cfg.LogFormat, o.cfg.LogOutputs)
	if err != nil {
		fmt.Fprintf(stderr, "meshetcd: %v\n", err)
		return exitUsage
	}
	defer func() { _ = lg.Sync() }()
	lg.Info("Running: ", zap.Strings("args", argv))
	for _, w := range o.warnings {
		fields := make([]zap.Field, 0, len(w.fields))
		for k, v := range w.fields {
			fields = append(fields, zap.String(k, v))
		}
		if w.info {
			lg.Info(w.msg, fields...)
		} else {
			lg.Warn(w.msg, fields...)
		}
	}
	o.cfg.Logger = lg

	// The first SIGINT/SIGTERM starts a clean shutdown; a second one while
	// that is in progress exits at once.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	started := make(chan startResult, 1)
	go func() {
		m, err := embed.StartMember(ctx, o.cfg)
		started <- startResult{m, err}
	}()

	var m *embed.Member
	select {
	case r := <-started:
		if r.err != nil {
			lg.Error("failed to start meshetcd member", zap.Error(r.err))
			return exitError
		}
		m = r.m
	case sig := <-sigc:
		lg.Info("received signal during start-up; shutting down", zap.String("signal", sig.String()))
		cancel()
		r := <-started
		if r.m != nil {
			if err := r.m.Close(); err != nil {
				lg.Error("shutdown failed", zap.Error(err))
				return exitError
			}
		}
		return exitOK
	}

	code := exitOK
	select {
	case sig := <-sigc:
		lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
	case err := <-m.Err():
		lg.Error("member failed; shutting down", zap.Error(err))
		code = exitError
	}

	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			lg.Error("shutdown failed", zap.Error(err))
			return exitError
		}
		lg.Info("meshetcd stopped")
		return code
	case sig := <-sigc:
		lg.Warn("received second signal; exiting without a clean shutdown", zap.String("signal", sig.String()))
		return exitError
	}
}

type startResult struct {
	m   *embed.Member
	err error
}

// printVersion prints etcd's --version layout with meshetcd's names.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "meshetcd Version: %s\n", embed.Version)
	fmt.Fprintf(w, "Git SHA: %s\n", gitSHA())
	fmt.Fprintf(w, "Go Version: %s\n", runtime.Version())
	fmt.Fprintf(w, "Go OS/Arch: %s/%s\n", runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "etcd API Version: %s\n", embed.APIVersion)
}

// gitSHA reads the commit the Go toolchain stamped into the binary (go build
// inside a git checkout does this), so no -ldflags are needed.
func gitSHA() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "Not provided"
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "Not provided"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
