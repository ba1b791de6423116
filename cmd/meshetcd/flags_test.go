package main

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// fakeEnv is a test environment; it never reads the real one.
type fakeEnv map[string]string

func (e fakeEnv) Lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e fakeEnv) Environ() []string {
	var out []string
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}

func mustParse(t *testing.T, args []string, e fakeEnv) *options {
	t.Helper()
	o, err := parseFlags(args, e)
	if err != nil {
		t.Fatalf("parseFlags(%q): %v", args, err)
	}
	return o
}

func mustFail(t *testing.T, args []string, e fakeEnv, wantSubstr ...string) error {
	t.Helper()
	_, err := parseFlags(args, e)
	if err == nil {
		t.Fatalf("parseFlags(%q) succeeded, want an error", args)
	}
	var ue usageError
	if !errors.As(err, &ue) {
		t.Fatalf("parseFlags(%q) error %v is not a usage error", args, err)
	}
	for _, s := range wantSubstr {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("parseFlags(%q) error %q does not mention %q", args, err, s)
		}
	}
	return err
}

func hasWarning(o *options, msgSubstr, field, value string) bool {
	for _, w := range o.warnings {
		if strings.Contains(w.msg, msgSubstr) && (field == "" || w.fields[field] == value) {
			return true
		}
	}
	return false
}

func TestDefaultsAreEtcds(t *testing.T) {
	o := mustParse(t, nil, fakeEnv{})
	c := o.cfg
	if c.Name != "default" || c.EffectiveDataDir() != "default.meshetcd" {
		t.Errorf("name/data-dir = %q/%q, want default/default.meshetcd", c.Name, c.EffectiveDataDir())
	}
	for what, got := range map[string]string{
		"listen-client-urls":          urlList(c.ListenClientURLs),
		"advertise-client-urls":       urlList(c.AdvertiseClientURLs),
		"listen-peer-urls":            urlList(c.ListenPeerURLs),
		"initial-advertise-peer-urls": urlList(c.AdvertisePeerURLs),
	} {
		want := "http://127.0.0.1:2379"
		if strings.Contains(what, "peer") {
			want = "http://127.0.0.1:2380"
		}
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	if c.SnapshotCount != 10000 || c.HeartbeatInterval != 100*time.Millisecond || c.ElectionTimeout != time.Second ||
		c.MaxRequestBytes != 1572864 || c.MaxTxnOps != 128 || c.QuotaBackendBytes != 0 ||
		c.InitialClusterToken != "etcd-cluster" || c.InitialClusterState != "new" ||
		c.AutoCompactionMode != "periodic" || c.AutoCompactionRetention != "0" || c.LogLevel != "info" ||
		c.UnsafeNoFsync || c.EnablePprof {
		t.Errorf("defaults differ from etcd's: %+v", c)
	}
	if len(o.warnings) != 0 {
		t.Errorf("no flags and no env should give no warnings, got %v", o.warnings)
	}
}

func TestFlagSyntaxForms(t *testing.T) {
	for _, args := range [][]string{
		{"--name=n1"}, {"--name", "n1"}, {"-name", "n1"}, {"-name=n1"},
		{"--name", "x", "--name", "n1"}, // repeated: last wins, like etcd
	} {
		o := mustParse(t, args, fakeEnv{})
		if o.cfg.Name != "n1" {
			t.Errorf("%q: name = %q, want n1", args, o.cfg.Name)
		}
	}
	o := mustParse(t, []string{"--unsafe-no-fsync", "--enable-pprof=true", "--snapshot-count", "5"}, fakeEnv{})
	if !o.cfg.UnsafeNoFsync || !o.cfg.EnablePprof || o.cfg.SnapshotCount != 5 {
		t.Errorf("bool/uint flags not applied: %+v", o.cfg)
	}
}

func TestURLListsReplaceAndDedupe(t *testing.T) {
	o := mustParse(t, []string{
		"--listen-client-urls", "http://127.0.0.1:26001",
		"--listen-client-urls", "http://127.0.0.1:26002,http://127.0.0.1:26003,http://127.0.0.1:26002",
		"--advertise-client-urls=http://127.0.0.1:26002",
	}, fakeEnv{})
	got := urlList(o.cfg.ListenClientURLs)
	if got != "http://127.0.0.1:26002,http://127.0.0.1:26003" {
		t.Errorf("listen-client-urls = %q, want the last list, deduplicated", got)
	}
}

func TestListenClientURLsNeedAdvertise(t *testing.T) {
	mustFail(t, []string{"--listen-client-urls=http://127.0.0.1:26001"}, fakeEnv{},
		"--advertise-client-urls is required when --listen-client-urls is set explicitly")
}

func TestEnvironment(t *testing.T) {
	o := mustParse(t, nil, fakeEnv{"ETCD_NAME": "fromenv", "ETCD_SNAPSHOT_COUNT": "7", "ETCD_UNSAFE_NO_FSYNC": "true"})
	if o.cfg.Name != "fromenv" || o.cfg.SnapshotCount != 7 || !o.cfg.UnsafeNoFsync {
		t.Errorf("env not applied: name=%q snapshot-count=%d no-fsync=%v", o.cfg.Name, o.cfg.SnapshotCount, o.cfg.UnsafeNoFsync)
	}

	// An explicit flag wins over the environment, with a warning.
	o = mustParse(t, []string{"--name=fromflag"}, fakeEnv{"ETCD_NAME": "fromenv"})
	if o.cfg.Name != "fromflag" {
		t.Errorf("name = %q, want the flag's value", o.cfg.Name)
	}
	if !hasWarning(o, "shadowed", "environment-variable", "ETCD_NAME") {
		t.Errorf("no shadowing warning: %v", o.warnings)
	}

	// Unknown ETCD_* variables are warned about, not errors.
	o = mustParse(t, nil, fakeEnv{"ETCD_NO_SUCH_FLAG": "1", "ETCDCTL_API": "3", "HOME": "/x"})
	if !hasWarning(o, "unrecognized environment variable", "environment-variable", "ETCD_NO_SUCH_FLAG=1") {
		t.Errorf("no warning for an unknown ETCD_ variable: %v", o.warnings)
	}
	if hasWarning(o, "unrecognized", "environment-variable", "ETCDCTL_API=3") {
		t.Errorf("ETCDCTL_API is not an ETCD_ variable")
	}

	// ETCD_VERSION must not turn the server into `--version`.
	o = mustParse(t, nil, fakeEnv{"ETCD_VERSION": "1"})
	if o.printVersion || !hasWarning(o, "cannot set special environment variable", "key", "ETCD_VERSION") {
		t.Errorf("ETCD_VERSION: printVersion=%v warnings=%v", o.printVersion, o.warnings)
	}

	// Empty values are ignored, like etcd.
	o = mustParse(t, nil, fakeEnv{"ETCD_NAME": ""})
	if o.cfg.Name != "default" {
		t.Errorf("empty ETCD_NAME changed the name to %q", o.cfg.Name)
	}

	mustFail(t, nil, fakeEnv{"ETCD_SNAPSHOT_COUNT": "many"}, "ETCD_SNAPSHOT_COUNT", "many")
	mustFail(t, nil, fakeEnv{"ETCD_INITIAL_CLUSTER_STATE": "maybe"}, "ETCD_INITIAL_CLUSTER_STATE")
}

func TestSecurityFlagsRefused(t *testing.T) {
	for _, x := range etcdExtraFlags {
		if x.kind != security {
			continue
		}
		val := "/tmp/x"
		switch x.typ {
		case "bool":
			val = "true"
			if x.def == "true" {
				val = "false"
			}
		case "uint":
			val = "12"
		}
		t.Run(x.name, func(t *testing.T) {
			mustFail(t, []string{"--" + x.name + "=" + val}, fakeEnv{}, "--"+x.name, "security")
			mustFail(t, nil, fakeEnv{flagToEnv(x.name): val}, flagToEnv(x.name))
			// Spelling out etcd's default is not a request for security we lack.
			o := mustParse(t, []string{"--" + x.name + "=" + x.def}, fakeEnv{})
			if !hasWarning(o, "default", "flag", "--"+x.name) {
				t.Errorf("no warning for --%s at its default: %v", x.name, o.warnings)
			}
		})
	}
	// The usual suspects by name, so a table edit cannot quietly drop them.
	for _, args := range [][]string{
		{"--cors", "http://a.example"}, {"--host-whitelist", "a.example"}, {"--discovery-cert", "d.crt"},
	} {
		mustFail(t, args, fakeEnv{}, strings.TrimPrefix(args[0], "--"))
	}
}

func TestUnsupportedAndHarmlessFlags(t *testing.T) {
	mustFail(t, []string{"--wal-dir", "/tmp/wal"}, fakeEnv{}, "--wal-dir")
	mustFail(t, []string{"--force-new-cluster"}, fakeEnv{}, "--force-new-cluster")
	mustFail(t, []string{"--discovery-endpoints", "http://127.0.0.1:26001", "--discovery-token", "t"}, fakeEnv{}, "discovery")

	o := mustParse(t, []string{"--max-wals", "3", "--pre-vote=false", "--metrics", "extensive"}, fakeEnv{})
	for _, f := range []string{"--max-wals", "--pre-vote", "--metrics"} {
		if !hasWarning(o, "not implemented", "flag", f) {
			t.Errorf("no warning for harmless %s: %v", f, o.warnings)
		}
	}
	o = mustParse(t, []string{"--v", "--peer-heartbeat-interval"}, fakeEnv{})
	if !hasWarning(o, "no longer supported", "flag-name", "v") {
		t.Errorf("no warning for legacy --v: %v", o.warnings)
	}
	// A harmless flag still validates its value type, as etcd does.
	mustFail(t, []string{"--max-wals", "lots"}, fakeEnv{}, "max-wals")
}

func TestBadUsage(t *testing.T) {
	mustFail(t, []string{"--no-such-flag"}, fakeEnv{}, "no-such-flag")
	mustFail(t, []string{"stray"}, fakeEnv{}, `"stray" is not a valid flag`)
	mustFail(t, []string{"--heartbeat-interval", "fast"}, fakeEnv{}, "heartbeat-interval")
	mustFail(t, []string{"--heartbeat-interval", "300"}, fakeEnv{}, "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]")
	mustFail(t, []string{"--heartbeat-interval", "0"}, fakeEnv{}, "--heartbeat-interval must be >0")
	mustFail(t, []string{"--initial-cluster-state", "bogus"}, fakeEnv{}, "initial-cluster-state")
	mustFail(t, []string{"--listen-client-urls", "https://127.0.0.1:26001", "--advertise-client-urls", "https://127.0.0.1:26001"}, fakeEnv{}, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:26001 with HTTPS scheme")
	mustFail(t, []string{"--listen-client-urls", "http://example.com:26001", "--advertise-client-urls", "http://example.com:26001"}, fakeEnv{}, "expected IP in URL for binding")
	mustFail(t, []string{"--listen-client-urls", "127.0.0.1:26001"}, fakeEnv{}, "listen-client-urls")
	mustFail(t, []string{"--log-level", "loud"}, fakeEnv{}, "log-level")
	mustFail(t, []string{"--logger", "capnslog"}, fakeEnv{}, "capnslog")
	mustFail(t, []string{"--auto-compaction-mode", "sometimes"}, fakeEnv{}, `unknown auto-compaction-mode "sometimes"`)
	mustFail(t, []string{"--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"}, fakeEnv{}, "auto-compaction-retention")
	mustFail(t, []string{"--initial-cluster", "other=http://127.0.0.1:26380"}, fakeEnv{}, `couldn't find local name "default"`)
}

// TestClientTLSFlags checks that etcd's client TLS flags reach the member's
// configuration and that bad values fail with etcd's messages.
func TestClientTLSFlags(t *testing.T) {
	o := mustParse(t, []string{
		"--listen-client-urls", "https://127.0.0.1:26001,http://127.0.0.1:26002",
		"--advertise-client-urls", "https://127.0.0.1:26001",
		"--cert-file", "s.crt", "--key-file", "s.key", "--client-cert-file", "c.crt", "--client-key-file", "c.key",
		"--trusted-ca-file", "ca.crt", "--client-cert-auth", "--client-crl-file", "ca.crl",
		"--client-cert-allowed-hostname", "a.example,b.example",
		"--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
		"--tls-max-version", "TLS1.3", "--auto-tls", "--self-signed-cert-validity", "3",
	}, fakeEnv{})
	ti := o.cfg.ClientTLSInfo
	if ti.CertFile != "s.crt" || ti.KeyFile != "s.key" || ti.ClientCertFile != "c.crt" || ti.ClientKeyFile != "c.key" ||
		ti.TrustedCAFile != "ca.crt" || !ti.ClientCertAuth || ti.CRLFile != "ca.crl" ||
		strings.Join(ti.AllowedHostnames, ",") != "a.example,b.example" {
		t.Errorf("ClientTLSInfo = %+v", ti)
	}
	if len(o.cfg.CipherSuites) != 2 || o.cfg.TlsMinVersion != "TLS1.2" || o.cfg.TlsMaxVersion != "TLS1.3" || !o.cfg.ClientAutoTLS || o.cfg.SelfSignedCertValidity != 3 {
		t.Errorf("cipher suites %v, versions %q..%q, auto %v, validity %d", o.cfg.CipherSuites, o.cfg.TlsMinVersion, o.cfg.TlsMaxVersion, o.cfg.ClientAutoTLS, o.cfg.SelfSignedCertValidity)
	}
	// From the environment, as etcd reads them.
	o = mustParse(t, nil, fakeEnv{"ETCD_CERT_FILE": "e.crt", "ETCD_CLIENT_CERT_AUTH": "true"})
	if o.cfg.ClientTLSInfo.CertFile != "e.crt" || !o.cfg.ClientTLSInfo.ClientCertAuth {
		t.Errorf("from env: %+v", o.cfg.ClientTLSInfo)
	}

	mustFail(t, []string{"--cipher-suites", "FOO"}, fakeEnv{}, `unexpected TLS cipher suite "FOO"`)
	mustFail(t, []string{"--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"}, fakeEnv{}, "min version (TLS1.3) is greater than max version (TLS1.2)")
	mustFail(t, []string{"--tls-min-version", "TLS1.1"}, fakeEnv{}, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`)
	mustFail(t, []string{"--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, fakeEnv{}, "cipher suites cannot be configured when only TLS1.3 is enabled")
	mustFail(t, []string{"--listen-client-urls", "https://127.0.0.1:26001", "--advertise-client-urls", "https://127.0.0.1:26001", "--auto-tls", "--self-signed-cert-validity", "0"}, fakeEnv{}, "--self-signed-cert-validity")
}

func TestInitialClusterDerivedFromName(t *testing.T) {
	o := mustParse(t, []string{"--name", "m1", "--initial-advertise-peer-urls", "http://127.0.0.1:26380"}, fakeEnv{})
	ic, err := o.cfg.InitialClusterMap()
	if err != nil {
		t.Fatal(err)
	}
	if ic.String() != "m1=http://127.0.0.1:26380" {
		t.Errorf("initial cluster = %q", ic.String())
	}
	if o.cfg.EffectiveDataDir() != "m1.meshetcd" {
		t.Errorf("data dir = %q, want m1.meshetcd", o.cfg.EffectiveDataDir())
	}
}

func TestRunExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"meshetcd", "--version"}, &out, &errb, fakeEnv{}); code != exitOK {
		t.Fatalf("--version exit code %d", code)
	}
	for _, line := range []string{"meshetcd Version: ", "Git SHA: ", "Go Version: go", "Go OS/Arch: ", "etcd API Version: 3.7"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("--version output lacks %q:\n%s", line, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"meshetcd", "--help"}, &out, &errb, fakeEnv{}); code != exitOK || !strings.Contains(out.String(), "--listen-client-urls") {
		t.Errorf("--help: code %d, output %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"meshetcd", "-h"}, &out, &errb, fakeEnv{}); code != exitOK || !strings.Contains(out.String(), "--cert-file") {
		t.Errorf("-h: code %d", code)
	}
	errb.Reset()
	if code := run([]string{"meshetcd", "--force-new-cluster"}, &out, &errb, fakeEnv{}); code != exitUsage {
		t.Errorf("--force-new-cluster: exit code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errb.String(), "--force-new-cluster") {
		t.Errorf("refusal message does not name the flag: %q", errb.String())
	}
	if code := run([]string{"meshetcd", "--bogus"}, &out, &errb, fakeEnv{}); code != exitUsage {
		t.Errorf("--bogus: exit code %d, want %d", code, exitUsage)
	}
}

// TestFlagSetCoversEtcd reads etcd v3.7.3's own flag definitions from the
// module cache and checks that meshetcd accepts every one of them, so an
// etcd script never fails on "unknown flag" here.
func TestFlagSetCoversEtcd(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	outb, err := exec.Command(goBin, "list", "-m", "-f", "{{.Dir}}", "go.etcd.io/etcd/server/v3").Output()
	if err != nil {
		t.Skipf("cannot locate etcd server module: %v", err)
	}
	dir := strings.TrimSpace(string(outb))
	names := map[string]bool{"feature-gates": true} // added through the feature gate
	defRe := regexp.MustCompile(`(?s)fs\.(?:String|Bool|Uint|Uint64|Int|Int64|Duration|)(?:Var)?\((.*?)\)\n`)
	litRe := regexp.MustCompile(`"([a-z][a-z0-9.-]+)"`)
	for _, f := range []string{"embed/config.go", "etcdmain/config.go"} {
		src, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("reading etcd source: %v", err)
		}
		for _, m := range defRe.FindAllStringSubmatch(string(src), -1) {
			if lit := litRe.FindStringSubmatch(m[1]); lit != nil {
				names[lit[1]] = true
			}
		}
		if blk := regexp.MustCompile(`(?s)ignored = \[\]string\{(.*?)\}`).FindStringSubmatch(string(src)); blk != nil {
			for _, lit := range litRe.FindAllStringSubmatch(blk[1], -1) {
				if !strings.HasPrefix(lit[1], "test.") {
					names[lit[1]] = true
				}
			}
		}
	}
	t.Logf("etcd v3.7.3 defines %d flags", len(names))
	if len(names) < 100 {
		t.Fatalf("found only %d etcd flags; the source scan is broken", len(names))
	}
	fs := registeredFlags(t)
	for n := range names {
		if fs.Lookup(n) == nil {
			t.Errorf("etcd flag --%s is not accepted by meshetcd", n)
		}
	}
}

// registeredFlags returns meshetcd's flag set by parsing --help (which
// registers everything and parses nothing else).
func registeredFlags(t *testing.T) *pflag.FlagSet {
	t.Helper()
	o, err := parseFlags([]string{"--help"}, fakeEnv{})
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	re := regexp.MustCompile(`(?m)^\s+(?:-h, )?--([a-z0-9-]+)`)
	for _, m := range re.FindAllStringSubmatch(o.help, -1) {
		fs.Bool(m[1], false, "")
	}
	for _, x := range etcdExtraFlags {
		if x.kind == legacy {
			fs.Bool(x.name, false, "")
		}
	}
	return fs
}

func urlList(us []url.URL) string {
	ss := make([]string, len(us))
	for i := range us {
		ss[i] = us[i].String()
	}
	return strings.Join(ss, ",")
}
