package main

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/meshetcd/meshetcd/embed"
)

// envPrefix is etcd's: a flag --some-flag is also read from ETCD_SOME_FLAG.
// meshetcd's own flags (isMeshFlag) are read from MESHETCD_SOME_FLAG
// instead, so an etcd environment never sets them by accident.
const (
	envPrefix     = "ETCD"
	meshEnvPrefix = "MESHETCD"
	// meshPasswordEnv carries the mesh secret itself; it has no flag, so
	// the secret never has to appear on a command line (visible in ps).
	meshPasswordEnv = "MESHETCD_MESH_PASSWORD"
)

// isMeshFlag reports meshetcd's own flags (etcd has no such flag).
func isMeshFlag(name string) bool {
	switch name {
	case "discovery-size", "discovery-timeout", "peers", "join", "join-timeout", "mesh-password-file":
		return true
	}
	return false
}

// flagKind says what meshetcd does with one of etcd's flags.
type flagKind int

const (
	// implemented flags configure the member.
	implemented flagKind = iota
	// harmless flags are etcd tuning knobs meshetcd does not implement yet;
	// ignoring them cannot weaken safety or security, so they are accepted
	// (scripts written for etcd keep working) with a warning.
	harmless
	// security flags change who may connect or how traffic is protected.
	// Ignoring one would silently run with less security than the operator
	// asked for, so any value other than etcd's default is refused.
	security
	// unsupported flags change where data lives or how the cluster forms;
	// running without them would do something else than asked, so any value
	// other than the default is refused too.
	unsupported
	// legacy flags are the ones etcd itself accepts and ignores.
	legacy
)

// extraFlag describes one etcd flag that meshetcd accepts but does not
// implement. typ is one of: string, bool, uint, int, uint64, uint32, duration.
type extraFlag struct {
	name string
	typ  string
	def  string
	kind flagKind
	note string // shown in the warning or refusal
}

// etcdExtraFlags lists every flag of etcd v3.7.3 (server/v3/embed
// Config.AddFlags and etcdmain newConfig) that meshetcd does not implement,
// with etcd's default. TestFlagSetCoversEtcd keeps it complete.
var etcdExtraFlags = []extraFlag{
	// member
	{"wal-dir", "string", "", unsupported, "a dedicated WAL directory is not supported yet; the WAL lives under --data-dir"},
	{"listen-client-http-urls", "string", "", unsupported, "separate HTTP-only client listeners are not supported yet; HTTP is served on --listen-client-urls"},
	{"max-snapshots", "uint", "5", harmless, "deprecated in etcd 3.6"},
	{"max-wals", "uint", "5", harmless, ""},
	{"initial-election-tick-advance", "bool", "true", harmless, ""},
	{"backend-bbolt-freelist-type", "string", "", harmless, ""},
	{"backend-batch-interval", "duration", "0s", harmless, ""},
	{"backend-batch-limit", "int", "0", harmless, ""},
	{"socket-reuse-port", "bool", "false", harmless, ""},
	{"socket-reuse-address", "bool", "false", harmless, ""},
	{"raft-read-timeout", "duration", "5s", harmless, "raft runs over the mesh, not rafthttp"},
	{"raft-write-timeout", "duration", "5s", harmless, "raft runs over the mesh, not rafthttp"},
	{"pre-vote", "bool", "true", harmless, ""},
	{"v2-deprecation", "string", "", harmless, "deprecated in etcd and ignored by it too"},
	{"feature-gates", "string", "", harmless, ""},
	{"max-learners", "int", "1", harmless, ""},
	{"snapshot-catchup-entries", "uint64", "5000", harmless, ""},
	{"force-new-cluster", "bool", "false", unsupported, "--force-new-cluster is not supported yet"},
	{"memory-mlock", "bool", "false", harmless, ""},
	{"bootstrap-defrag-threshold-megabytes", "uint", "0", harmless, ""},

	// discovery: cluster formation meshetcd does differently (the mesh)
	{"discovery-endpoints", "string", "", unsupported, "etcd v3 discovery is not supported; use --initial-cluster, or mesh discovery with --discovery-size N --peers host:port"},
	{"discovery-token", "string", "", unsupported, "etcd v3 discovery is not supported; use mesh discovery: --discovery-size N --peers host:port"},
	{"discovery-srv", "string", "", unsupported, "DNS SRV discovery is not supported; use mesh discovery: --discovery-size N --peers host:port"},
	{"discovery-srv-name", "string", "", unsupported, "DNS SRV discovery is not supported"},
	{"discovery-fallback", "string", "exit", unsupported, "etcd discovery is not supported"},
	{"discovery-dial-timeout", "duration", "2s", harmless, ""},
	{"discovery-request-timeout", "duration", "5s", harmless, ""},
	{"discovery-keepalive-time", "duration", "2s", harmless, ""},
	{"discovery-keepalive-timeout", "duration", "6s", harmless, ""},
	{"discovery-insecure-transport", "bool", "true", security, "etcd discovery is not supported"},
	{"discovery-insecure-skip-tls-verify", "bool", "false", security, "etcd discovery is not supported"},
	{"discovery-cert", "string", "", security, "etcd discovery is not supported"},
	{"discovery-key", "string", "", security, "etcd discovery is not supported"},
	{"discovery-cacert", "string", "", security, "etcd discovery is not supported"},
	{"discovery-user", "string", "", security, "etcd discovery is not supported"},
	{"discovery-password", "string", "", security, "etcd discovery is not supported"},

	{"cors", "string", "*", security, "CORS restrictions are not implemented yet"},
	{"host-whitelist", "string", "*", security, "host whitelisting is not implemented yet"},

	// logging, monitoring, tracing
	{"enable-log-rotation", "bool", "false", harmless, ""},
	{"log-rotation-config-json", "string", `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`, harmless, ""},
	{"metrics", "string", "basic", harmless, ""},
	{"enable-distributed-tracing", "bool", "false", harmless, ""},
	{"distributed-tracing-address", "string", "localhost:4317", harmless, ""},
	{"distributed-tracing-service-name", "string", "etcd", harmless, ""},
	{"distributed-tracing-instance-id", "string", "", harmless, ""},
	{"distributed-tracing-sampling-rate", "int", "0", harmless, ""},

	// features
	{"corrupt-check-time", "duration", "0s", harmless, ""},
	{"compact-hash-check-time", "duration", "1m0s", harmless, ""},
	{"compaction-batch-limit", "int", "0", harmless, ""},
	{"compaction-sleep-interval", "duration", "0s", harmless, ""},
	{"downgrade-check-time", "duration", "5s", harmless, ""},
	{"warning-apply-duration", "duration", "100ms", harmless, ""},

	// flags etcd itself accepts and ignores (etcdmain's "ignored" list)
	{"cluster-active-size", "ignored", "", legacy, ""},
	{"cluster-remove-delay", "ignored", "", legacy, ""},
	{"cluster-sync-interval", "ignored", "", legacy, ""},
	{"config", "ignored", "", legacy, ""},
	{"force", "ignored", "", legacy, ""},
	{"max-result-buffer", "ignored", "", legacy, ""},
	{"max-retry-attempts", "ignored", "", legacy, ""},
	{"peer-heartbeat-interval", "ignored", "", legacy, ""},
	{"peer-election-timeout", "ignored", "", legacy, ""},
	{"retry-interval", "ignored", "", legacy, ""},
	{"snapshot", "ignored", "", legacy, ""},
	{"v", "ignored", "", legacy, ""},
	{"vv", "ignored", "", legacy, ""},
}

// usageError is bad command-line input: the process exits with code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// options is the outcome of parsing the command line and environment.
type options struct {
	cfg          embed.Config
	printVersion bool
	printHelp    bool
	// warnings are logged once the configured logger exists.
	warnings []warning
	// help is the full flag listing, printed for --help.
	help string
}

// warning is a message for the log once it exists; info marks the ones
// etcd logs at info level rather than warn.
type warning struct {
	msg    string
	fields map[string]string
	info   bool
}

// env abstracts the process environment so parsing is testable without
// touching the real one.
type env interface {
	Lookup(key string) (string, bool)
	Environ() []string
}

// parseFlags parses args (without the program name) and the ETCD_*
// environment into options, or, when a config file is named
// (--config-file or ETCD_CONFIG_FILE), that file alone, as etcd does.
// Errors are usageErrors.
func parseFlags(args []string, e env) (*options, error) {
	return parseArgs(args, e, "")
}

// parseArgs is parseFlags; configPath is set when args were made from
// that config file (configFileArgs).
func parseArgs(args []string, e env, configPath string) (*options, error) {
	o := &options{cfg: embed.NewConfig()}
	cfg := &o.cfg
	fs := pflag.NewFlagSet("meshetcd", pflag.ContinueOnError)
	fs.SortFlags = false
	// Errors are reported by the caller, once, with a hint.
	fs.SetOutput(discard{})
	fs.Usage = func() {}

	lcurls := newURLsValue(embed.DefaultListenClientURL)
	acurls := newURLsValue(embed.DefaultAdvertiseClientURL)
	lpurls := newURLsValue(embed.DefaultListenPeerURL)
	apurls := newURLsValue(embed.DefaultInitialAdvertisePeerURL)
	lmurls := &urlsValue{}
	clusterState := &choiceValue{v: embed.ClusterStateNew, valid: []string{embed.ClusterStateNew, embed.ClusterStateExisting}}
	var (
		heartbeatMs, electionMs uint
		authTokenTTL            uint
		logger, logOutputs      string
		peers, meshPasswordFile string
		configFile              string
		clientAllowedHostnames  string
		cipherSuites            string
	)

	// member
	fs.StringVar(&cfg.Name, "name", cfg.Name, "Human-readable name for this member.")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Path to the data directory (default '${name}.meshetcd').")
	fs.Var(lpurls, "listen-peer-urls", "List of URLs to listen on for peer (mesh) traffic.")
	fs.Var(lcurls, "listen-client-urls", "List of URLs to listen on for client grpc and http traffic.")
	fs.Uint64Var(&cfg.SnapshotCount, "snapshot-count", cfg.SnapshotCount, "Number of committed transactions to trigger a snapshot.")
	fs.UintVar(&heartbeatMs, "heartbeat-interval", uint(embed.DefaultHeartbeatInterval.Milliseconds()), "Time (in milliseconds) of a heartbeat interval.")
	fs.UintVar(&electionMs, "election-timeout", uint(embed.DefaultElectionTimeout.Milliseconds()), "Time (in milliseconds) for an election to timeout.")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", cfg.QuotaBackendBytes, "Maximum size (in bytes) the backend database may consume; exceeding it raises the NOSPACE alarm. 0 means the default 2GiB.")
	fs.UintVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "Maximum number of operations permitted in a transaction.")
	fs.UintVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.Uint32Var(&cfg.MaxConcurrentStreams, "max-concurrent-streams", math.MaxUint32, "Maximum concurrent streams that each client can open at a time.")
	fs.DurationVar(&cfg.GRPCKeepAliveMinTime, "grpc-keepalive-min-time", 5*time.Second, "Minimum interval duration that a client should wait before pinging server.")
	fs.DurationVar(&cfg.GRPCKeepAliveInterval, "grpc-keepalive-interval", 2*time.Hour, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).")
	fs.DurationVar(&cfg.GRPCKeepAliveTimeout, "grpc-keepalive-timeout", 20*time.Second, "Additional duration of wait before closing a non-responsive connection (0 to disable).")
	fs.DurationVar(&cfg.WatchProgressNotifyInterval, "watch-progress-notify-interval", 0, "Duration of periodic watch progress notifications (0 means 10m).")
	fs.DurationVar(&cfg.WarningUnaryRequestDuration, "warning-unary-request-duration", 300*time.Millisecond, "Time duration after which a warning is logged if a unary request takes more than this duration.")
	fs.Var(lmurls, "listen-metrics-urls", "List of URLs to listen on for the metrics and health endpoints (http:// or https://; https uses the client certificate, --cert-file/--key-file).")

	// clustering
	fs.Var(apurls, "initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.")
	fs.Var(acurls, "advertise-client-urls", "List of this member's client URLs to advertise to the public.")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "Initial cluster configuration for bootstrapping (default '${name}=${initial-advertise-peer-urls}').")
	fs.Var(clusterState, "initial-cluster-state", "Initial cluster state ('new' or 'existing'). Ignored on restarts.")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "Initial cluster token for the cluster during bootstrap.")
	fs.BoolVar(&cfg.StrictReconfigCheck, "strict-reconfig-check", true, "Reject reconfiguration requests that would cause quorum loss.")
	fs.BoolVar(&cfg.PeerAutoTLS, "peer-auto-tls", false, "Encrypt every mesh link with ephemeral keys, like etcd's self-signed peer TLS: confidential against passive eavesdroppers, not authenticated. Peer certificates or a mesh secret (--mesh-password-file) take precedence.")
	finishPeerTLS := addPeerTLSFlags(fs, cfg)

	// client security (etcd's flags and defaults)
	fs.StringVar(&cfg.ClientTLSInfo.CertFile, "cert-file", "", "Path to the client server TLS cert file.")
	fs.StringVar(&cfg.ClientTLSInfo.KeyFile, "key-file", "", "Path to the client server TLS key file.")
	fs.StringVar(&cfg.ClientTLSInfo.ClientCertFile, "client-cert-file", "", "Path to an explicit client TLS cert file (presented by the JSON gateway to its own port) otherwise cert file will be used when client auth is required.")
	fs.StringVar(&cfg.ClientTLSInfo.ClientKeyFile, "client-key-file", "", "Path to an explicit client TLS key file otherwise key file will be used when client auth is required.")
	fs.BoolVar(&cfg.ClientTLSInfo.ClientCertAuth, "client-cert-auth", false, "Enable client cert authentication (with auth enabled, a client certificate's CN is the user).")
	fs.StringVar(&cfg.ClientTLSInfo.CRLFile, "client-crl-file", "", "Path to the client certificate revocation list file.")
	fs.StringVar(&clientAllowedHostnames, "client-cert-allowed-hostname", "", "Comma-separated list of allowed SAN hostnames for client cert authentication.")
	fs.StringVar(&cfg.ClientTLSInfo.TrustedCAFile, "trusted-ca-file", "", "Path to the client server TLS trusted CA cert file.")
	fs.BoolVar(&cfg.ClientAutoTLS, "auto-tls", false, "Client TLS using generated certificates")
	fs.UintVar(&cfg.SelfSignedCertValidity, "self-signed-cert-validity", 1, "The validity period of the client and peer certificates, unit is year")
	fs.StringVar(&cipherSuites, "cipher-suites", "", "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go).")
	fs.StringVar(&cfg.TlsMinVersion, "tls-min-version", embed.DefaultTLSMinVersion, "Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.")
	fs.StringVar(&cfg.TlsMaxVersion, "tls-max-version", "", "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty defers to Go).")

	// meshetcd: forming a cluster over the mesh
	fs.IntVar(&cfg.DiscoverySize, "discovery-size", 0, "Form a new cluster of this many members by mesh discovery (with --peers); a member that finds a running cluster joins it.")
	fs.DurationVar(&cfg.DiscoveryTimeout, "discovery-timeout", embed.DefaultJoinTimeout, "With --discovery-size: give up (exit 1, naming the members found and missing) when discovery has not formed or found a cluster within this time.")
	fs.StringVar(&peers, "peers", "", "Comma-separated host:port of reachable members' peer addresses (mesh seeds); one is enough.")
	fs.BoolVar(&cfg.Join, "join", false, "Join the running cluster reachable through --peers: added as a learner, promoted to voter once caught up.")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", embed.DefaultJoinTimeout, "With --join or --initial-cluster-state existing: give up (exit 1, naming the last reason) when no member answers within this time.")
	fs.StringVar(&meshPasswordFile, "mesh-password-file", "", "File holding the shared mesh secret that authenticates and encrypts every mesh link (or set "+meshPasswordEnv+").")

	fs.StringVar(&cfg.AutoCompactionRetention, "auto-compaction-retention", cfg.AutoCompactionRetention, "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.")
	fs.StringVar(&cfg.AutoCompactionMode, "auto-compaction-mode", cfg.AutoCompactionMode, "Interpret 'auto-compaction-retention' as one of: periodic|revision.")

	// logging and profiling
	fs.StringVar(&logger, "logger", "zap", "Currently only supports 'zap' for structured logging.")
	fs.StringVar(&logOutputs, "log-outputs", embed.DefaultLogOutput, "'default', 'stderr', 'stdout' or file paths, comma separated.")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "Configures log level. Only supports debug, info, warn, error, panic, or fatal.")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "Configures log format. Only supports json, console.")
	fs.BoolVar(&cfg.EnableGRPCGateway, "enable-grpc-gateway", true, "Enable the JSON gateway (/v3/...) on the client ports.")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "Enable runtime profiling data via HTTP server at client URL + \"/debug/pprof/\".")

	// auth
	fs.StringVar(&cfg.AuthToken, "auth-token", cfg.AuthToken, "Specify auth token specific options: 'simple', or 'jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256[,ttl=5m]'.")
	fs.UintVar(&cfg.BcryptCost, "bcrypt-cost", cfg.BcryptCost, "Specify bcrypt algorithm cost factor for auth password hashing (4 to 31).")
	fs.UintVar(&authTokenTTL, "auth-token-ttl", uint(embed.DefaultAuthTokenTTL.Seconds()), "The lifetime in seconds of the auth token (simple tokens; jwt takes ttl= in --auth-token).")

	// unsafe
	fs.BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, "Disables fsync, unsafe, will cause data loss.")

	fs.StringVar(&configFile, "config-file", "", "Path to the server configuration file (etcd's YAML keys plus meshetcd's). Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the version and exit.")
	fs.BoolVarP(&o.printHelp, "help", "h", false, "Show this help and exit.")

	kinds := map[string]extraFlag{}
	for _, x := range etcdExtraFlags {
		if err := addExtraFlag(fs, x); err != nil {
			return nil, err
		}
		kinds[x.name] = x
	}

	if err := fs.Parse(normalizeArgs(fs, args)); err != nil {
		return nil, usageError{err}
	}
	o.help = helpText(fs, kinds)
	if o.printHelp || o.printVersion {
		return o, nil
	}
	if fs.NArg() != 0 {
		return nil, usageErrorf("%q is not a valid flag", fs.Arg(0))
	}
	if configPath == "" {
		if configFile == "" {
			configFile, _ = e.Lookup(flagToEnv("config-file"))
		}
		if configFile != "" {
			return parseConfigFile(configFile, fs, e)
		}
	}

	fromEnv, err := applyEnv(fs, e, o)
	if err != nil {
		return nil, err
	}
	source := func(name string) string {
		if configPath != "" {
			return "--" + name + " (from " + configPath + ")"
		}
		if k, ok := fromEnv[name]; ok {
			return k
		}
		return "--" + name
	}

	// What meshetcd does not implement: refuse or warn, never ignore silently.
	var refusals []string
	fs.VisitAll(func(f *pflag.Flag) {
		x, ok := kinds[f.Name]
		if !ok || !f.Changed {
			return
		}
		switch x.kind {
		case security, unsupported:
			if f.Value.String() == f.DefValue {
				o.warnings = append(o.warnings, warning{"flag set to its default; accepted", map[string]string{"flag": source(f.Name)}, true})
				return
			}
			what := "is not supported by meshetcd yet"
			if x.kind == security {
				what = "changes security and is not implemented by meshetcd yet; refusing to start with less security than asked for"
			}
			msg := fmt.Sprintf("%s=%q %s", source(f.Name), f.Value.String(), what)
			if x.note != "" {
				msg += " (" + x.note + ")"
			}
			refusals = append(refusals, msg)
		case harmless:
			fields := map[string]string{"flag": source(f.Name), "value": f.Value.String()}
			if x.note != "" {
				fields["note"] = x.note
			}
			o.warnings = append(o.warnings, warning{"flag accepted for etcd compatibility but not implemented by meshetcd; ignoring", fields, false})
		case legacy:
			o.warnings = append(o.warnings, warning{"flag is no longer supported - ignoring", map[string]string{"flag-name": f.Name}, false})
		}
	})
	if len(refusals) > 0 {
		sort.Strings(refusals)
		return nil, usageError{errors.New(strings.Join(refusals, "; "))}
	}

	// Interpret the implemented flags the way etcdmain does.
	if logger != "zap" {
		return nil, usageErrorf("unknown Logger option %q (only 'zap' is supported)", logger)
	}
	cfg.LogOutputs = splitList(logOutputs)
	cfg.ListenClientURLs = lcurls.urls
	cfg.AdvertiseClientURLs = acurls.urls
	cfg.ListenPeerURLs = lpurls.urls
	cfg.ListenMetricsURLs = lmurls.urls
	cfg.AuthTokenTTL = time.Duration(authTokenTTL) * time.Second
	cfg.AdvertisePeerURLs = apurls.urls
	finishPeerTLS()
	cfg.InitialClusterState = clusterState.v
	cfg.Peers = splitList(peers)
	cfg.ClientTLSInfo.AllowedHostnames = splitList(clientAllowedHostnames)
	cfg.CipherSuites = splitList(cipherSuites)
	if meshPasswordFile != "" {
		b, err := os.ReadFile(meshPasswordFile)
		if err != nil {
			return nil, usageErrorf("--mesh-password-file: %w", err)
		}
		cfg.MeshPassword = strings.TrimRight(string(b), "\r\n")
		if cfg.MeshPassword == "" {
			return nil, usageErrorf("--mesh-password-file %s is empty", meshPasswordFile)
		}
		if _, ok := e.Lookup(meshPasswordEnv); ok {
			o.warnings = append(o.warnings, warning{"environment variable is shadowed by the corresponding command-line flag; using the flag", map[string]string{"environment-variable": meshPasswordEnv, "flag": "--mesh-password-file"}, false})
		}
	} else if v, ok := e.Lookup(meshPasswordEnv); ok && v != "" {
		cfg.MeshPassword = v
		// Never log the value.
		o.warnings = append(o.warnings, warning{"recognized and used environment variable", map[string]string{"variable-name": meshPasswordEnv, "variable-value": "(secret)"}, true})
	}
	cfg.HeartbeatInterval = time.Duration(heartbeatMs) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(electionMs) * time.Millisecond
	// etcd: an explicit --listen-client-urls without --advertise-client-urls
	// is an error, because the default advertised URL would point elsewhere.
	// (Not for a config file: etcd keeps the default advertised URL there.)
	if configPath == "" && fs.Changed("listen-client-urls") && !fs.Changed("advertise-client-urls") {
		return nil, usageError{embed.ErrUnsetAdvertiseClientURLs}
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	return o, nil
}

// parseConfigFile parses the config file at path as the whole
// configuration. cmdline is the command line already parsed (its flags
// are reported as ignored); e supplies only the mesh secret.
func parseConfigFile(path string, cmdline *pflag.FlagSet, e env) (*options, error) {
	args, fileWarnings, err := configFileArgs(path, cmdline)
	if err != nil {
		return nil, usageError{err}
	}
	o, err := parseArgs(args, meshSecretEnv{e}, path)
	if err != nil {
		return nil, err
	}
	// etcd's own line, then what exactly is ignored.
	warnings := []warning{{"loaded server configuration, other configuration command line flags and environment variables will be ignored if provided", map[string]string{"path": path}, true}}
	cmdline.Visit(func(f *pflag.Flag) {
		if f.Name != "config-file" {
			warnings = append(warnings, warning{"command-line flag ignored: a config file is given", map[string]string{"flag": "--" + f.Name, "config-file": path}, false})
		}
	})
	for _, kv := range e.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(key, envPrefix+"_") || strings.HasPrefix(key, meshEnvPrefix+"_")) && key != meshPasswordEnv && key != flagToEnv("config-file") {
			warnings = append(warnings, warning{"environment variable ignored: a config file is given", map[string]string{"environment-variable": key, "config-file": path}, false})
		}
	}
	o.warnings = append(append(warnings, fileWarnings...), o.warnings...)
	return o, nil
}

// meshSecretEnv is the environment as a config file sees it: only the
// mesh secret, which has no flag or key (see configfile.go).
type meshSecretEnv struct{ e env }

func (m meshSecretEnv) Lookup(key string) (string, bool) {
	if key != meshPasswordEnv {
		return "", false
	}
	return m.e.Lookup(key)
}

func (meshSecretEnv) Environ() []string { return nil }

// applyEnv sets every flag not given on the command line from its ETCD_*
// variable, as etcd's flags.SetFlagsFromEnv does, and records which flags
// came from the environment (name -> variable). Unknown ETCD_* variables
// are warned about, not errors, like etcd.
func applyEnv(fs *pflag.FlagSet, e env, o *options) (map[string]string, error) {
	fromEnv := map[string]string{}
	known := map[string]bool{}
	var err error
	known[meshPasswordEnv] = true
	fs.VisitAll(func(f *pflag.Flag) {
		key := flagToEnv(f.Name)
		known[key] = true
		if err != nil || f.Name == "version" || f.Name == "help" {
			return
		}
		val, ok := e.Lookup(key)
		if !ok || val == "" {
			return
		}
		if f.Changed {
			// etcd exits here; meshetcd lets the explicit flag win and says so.
			o.warnings = append(o.warnings, warning{"environment variable is shadowed by the corresponding command-line flag; using the flag", map[string]string{"environment-variable": key, "flag": "--" + f.Name}, false})
			return
		}
		if serr := fs.Set(f.Name, val); serr != nil {
			err = usageErrorf("invalid value %q for %s: %w", val, key, serr)
			return
		}
		fromEnv[f.Name] = key
		o.warnings = append(o.warnings, warning{"recognized and used environment variable", map[string]string{"variable-name": key, "variable-value": val}, true})
	})
	if err != nil {
		return nil, err
	}
	for _, kv := range e.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(key, envPrefix+"_") && !strings.HasPrefix(key, meshEnvPrefix+"_") || known[key] && key != "ETCD_VERSION" && key != "ETCD_HELP" {
			continue
		}
		switch key {
		case "ETCD_VERSION", "ETCD_HELP":
			o.warnings = append(o.warnings, warning{"cannot set special environment variable", map[string]string{"key": key}, false})
		default:
			o.warnings = append(o.warnings, warning{"unrecognized environment variable", map[string]string{"environment-variable": kv}, false})
		}
	}
	return fromEnv, nil
}

// flagToEnv is etcd's flags.FlagToEnv: --some-flag -> ETCD_SOME_FLAG, and
// MESHETCD_SOME_FLAG for meshetcd's own flags.
func flagToEnv(name string) string {
	prefix := envPrefix
	if isMeshFlag(name) {
		prefix = meshEnvPrefix
	}
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// normalizeArgs turns etcd's single-dash long flags (-name x, which Go's
// flag package accepts and etcd scripts use) into pflag's --name x. It
// leaves "-h", unknown names (pflag reports them) and everything after "--"
// alone.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if fs.Lookup(name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

func addExtraFlag(fs *pflag.FlagSet, x extraFlag) error {
	usage := "(etcd flag; not implemented by meshetcd)"
	switch x.kind {
	case harmless:
		usage = "(etcd flag; accepted and ignored by meshetcd)"
	case security, unsupported:
		usage = "(etcd flag; not supported by meshetcd yet: refused unless left at its default)"
	case legacy:
		usage = "(etcd legacy flag; ignored)"
	}
	var err error
	switch x.typ {
	case "string":
		fs.String(x.name, x.def, usage)
	case "bool":
		fs.Bool(x.name, x.def == "true", usage)
	case "uint":
		var v uint64
		_, err = fmt.Sscan(x.def, &v)
		fs.Uint(x.name, uint(v), usage)
	case "uint64":
		var v uint64
		_, err = fmt.Sscan(x.def, &v)
		fs.Uint64(x.name, v, usage)
	case "int":
		var v int
		_, err = fmt.Sscan(x.def, &v)
		fs.Int(x.name, v, usage)
	case "duration":
		var d time.Duration
		d, err = time.ParseDuration(x.def)
		fs.Duration(x.name, d, usage)
	case "ignored":
		f := fs.VarPF(ignoredValue{}, x.name, "", usage)
		f.NoOptDefVal = "true"
	default:
		err = fmt.Errorf("unknown flag type %q", x.typ)
	}
	if err != nil {
		return fmt.Errorf("internal flag table entry %q: %w", x.name, err)
	}
	return nil
}

func helpText(fs *pflag.FlagSet, kinds map[string]extraFlag) string {
	var b strings.Builder
	b.WriteString(`Usage:

  meshetcd [flags]
    Start a meshetcd member (etcd v3 API).

  meshetcd --version
    Show the version of meshetcd.

  meshetcd -h | --help
    Show this help.

Every flag can also be set from the environment: --some-flag is read from
ETCD_SOME_FLAG (MESHETCD_SOME_FLAG for meshetcd's own flags --discovery-size,
--discovery-timeout, --peers, --join, --join-timeout, --mesh-password-file) when
not given on the command line.
The mesh secret can be given as MESHETCD_MESH_PASSWORD (never as a flag value).

Forming a cluster: etcd's static --initial-cluster (peer URLs are mesh
addresses), mesh discovery (--discovery-size N --peers host:port on every
member), or --join --peers host:port to add a member to a running cluster
(etcd's "member add" + --initial-cluster-state existing works too). A member
needs to reach only one other member: the mesh relays.

meshetcd flags:
`)
	impl := pflag.NewFlagSet("impl", pflag.ContinueOnError)
	impl.SortFlags = false
	other := pflag.NewFlagSet("other", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := kinds[f.Name]; ok {
			if kinds[f.Name].kind != legacy {
				other.AddFlag(f)
			}
			return
		}
		impl.AddFlag(f)
	})
	b.WriteString(impl.FlagUsages())
	b.WriteString(`
Other etcd flags, accepted for compatibility. Harmless ones are ignored with
a warning; ones that would change security or data placement are refused
(exit code 2) unless left at etcd's default:
`)
	b.WriteString(other.FlagUsages())
	b.WriteString(`
Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 1 runtime error, 2 bad usage.
`)
	return b.String()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// urlsValue is a comma-separated URL list with etcd's flag semantics: a
// repeated flag replaces the earlier list (last wins), duplicates collapse.
type urlsValue struct {
	urls []url.URL
}

func newURLsValue(def string) *urlsValue {
	v := &urlsValue{}
	if err := v.Set(def); err != nil {
		panic(fmt.Sprintf("bad built-in default %q: %v", def, err))
	}
	return v
}

func (v *urlsValue) Set(s string) error {
	us, err := types.NewURLs(strings.Split(s, ","))
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	v.urls = v.urls[:0:0]
	for _, u := range us {
		if !seen[u.String()] {
			seen[u.String()] = true
			v.urls = append(v.urls, u)
		}
	}
	return nil
}

func (v *urlsValue) String() string {
	ss := make([]string, len(v.urls))
	for i := range v.urls {
		ss[i] = v.urls[i].String()
	}
	return strings.Join(ss, ",")
}

func (v *urlsValue) Type() string { return "urls" }

// choiceValue accepts one of a fixed set of strings, like etcd's
// SelectiveStringValue.
type choiceValue struct {
	v     string
	valid []string
}

func (c *choiceValue) Set(s string) error {
	for _, ok := range c.valid {
		if s == ok {
			c.v = s
			return nil
		}
	}
	return fmt.Errorf("invalid value %q (valid values: %s)", s, strings.Join(c.valid, ", "))
}
func (c *choiceValue) String() string { return c.v }
func (c *choiceValue) Type() string   { return "string" }

// ignoredValue is etcd's IgnoredFlag: accepts anything, stores nothing.
type ignoredValue struct{}

func (ignoredValue) Set(string) error { return nil }
func (ignoredValue) String() string   { return "" }
func (ignoredValue) Type() string     { return "ignored" }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
