package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// etcd's --config-file: a YAML file whose keys are etcd's flag names
// (embed.Config's JSON tags), read the way etcd 3.7 reads it
// (embed.ConfigFromFile), plus meshetcd's own keys (discovery-size, peers,
// join, join-timeout, mesh-password-file). As in etcd, when a config file
// is given (--config-file or ETCD_CONFIG_FILE) every other command-line
// flag and ETCD_* variable is ignored. The one exception is the mesh secret
// MESHETCD_MESH_PASSWORD: it has no flag and no key on purpose (a secret
// does not belong in a file operators share), and ignoring it would
// silently run the mesh in plaintext.
//
// Each key becomes the flag of the same name, so the file gets exactly the
// flags' parsing, validation and refusals.

// securityBlockKeys map the keys of etcd's client-transport-security and
// peer-transport-security blocks (embed's securityConfig) to flag names.
var securityBlockKeys = map[string]map[string]string{
	"client-transport-security": {
		"cert-file":        "cert-file",
		"key-file":         "key-file",
		"client-cert-file": "client-cert-file",
		"client-key-file":  "client-key-file",
		"client-cert-auth": "client-cert-auth",
		"trusted-ca-file":  "trusted-ca-file",
		"auto-tls":         "auto-tls",
		"allowed-hostname": "client-cert-allowed-hostname",
		// etcd 3.7 reads allowed-cn and skip-client-san-verification
		// here but has no client flag for them; handled below.
	},
	"peer-transport-security": {
		"cert-file":                    "peer-cert-file",
		"key-file":                     "peer-key-file",
		"client-cert-file":             "peer-client-cert-file",
		"client-key-file":              "peer-client-key-file",
		"client-cert-auth":             "peer-client-cert-auth",
		"trusted-ca-file":              "peer-trusted-ca-file",
		"auto-tls":                     "peer-auto-tls",
		"allowed-cn":                   "peer-cert-allowed-cn",
		"allowed-hostname":             "peer-cert-allowed-hostname",
		"skip-client-san-verification": "peer-skip-client-san-verification",
	},
}

// configFileArgs reads the config file at path and returns the equivalent
// command line ("--key=value", sorted by key) and warnings for keys
// meshetcd ignores. fs is the flag set the arguments are meant for; it is
// only looked at (flag names and types), never changed.
func configFileArgs(path string, fs *pflag.FlagSet) (args []string, warnings []warning, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--config-file: %w", err)
	}
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, nil, fmt.Errorf("--config-file %s: %w", path, err)
	}
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // 8589934592 stays an integer, durations stay exact
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("--config-file %s: want a YAML mapping of etcd configuration keys: %w", path, err)
	}

	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	add := func(key, flag string, v any) error {
		if v == nil { // "key:" with no value keeps the default, as in etcd
			return nil
		}
		f := fs.Lookup(flag)
		if f == nil || flag == "config-file" || flag == "version" || flag == "help" {
			warnings = append(warnings, warning{"unknown key in the config file; ignoring", map[string]string{"key": key, "path": path}, false})
			return nil
		}
		s, err := configValue(v, f.Value.Type())
		if err != nil {
			return fmt.Errorf("--config-file %s: key %q: %w", path, key, err)
		}
		args = append(args, "--"+flag+"="+s)
		return nil
	}
	for _, k := range keys {
		v := doc[k]
		if block, ok := securityBlockKeys[k]; ok {
			if v == nil {
				continue
			}
			m, ok := v.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("--config-file %s: invalid %s (want a mapping)", path, k)
			}
			sub := make([]string, 0, len(m))
			for sk := range m {
				sub = append(sub, sk)
			}
			sort.Strings(sub)
			for _, sk := range sub {
				flag, ok := block[sk]
				if !ok {
					if isUnset(m[sk]) {
						continue
					}
					switch sk {
					case "allowed-cn", "skip-client-san-verification":
						return nil, nil, fmt.Errorf("--config-file %s: %s.%s is not supported by meshetcd (etcd 3.7 has no client flag for it either)", path, k, sk)
					}
					warnings = append(warnings, warning{"unknown key in the config file; ignoring", map[string]string{"key": k + "." + sk, "path": path}, false})
					continue
				}
				if err := add(k+"."+sk, flag, m[sk]); err != nil {
					return nil, nil, err
				}
			}
			continue
		}
		switch k {
		case "discovery-config":
			// etcd v3 discovery (endpoints, token, ...): meshetcd forms
			// clusters by mesh discovery instead.
			if !isUnset(v) {
				return nil, nil, fmt.Errorf("--config-file %s: discovery-config is not supported (etcd v3 discovery); use mesh discovery: discovery-size and peers", path)
			}
			continue
		case "socket-options":
			m, _ := v.(map[string]any)
			for sk, flag := range map[string]string{"reuse-port": "socket-reuse-port", "reuse-address": "socket-reuse-address"} {
				if err := add(k+"."+sk, flag, m[sk]); err != nil {
					return nil, nil, err
				}
			}
			continue
		}
		if err := add(k, k, v); err != nil {
			return nil, nil, err
		}
	}
	return args, warnings, nil
}

// isUnset reports a YAML value that asks for nothing: null, false, "", an
// empty list or mapping.
func isUnset(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		for _, e := range x {
			if !isUnset(e) {
				return false
			}
		}
		return true
	}
	return false
}

// configValue renders a YAML value as the flag's string form. Lists become
// comma-separated (log-outputs, cipher-suites, allowed-cn). A number for a
// duration flag is nanoseconds, as etcd's JSON decoding of time.Duration
// reads it; a string like "5s" is accepted too.
func configValue(v any, flagType string) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		if flagType != "bool" {
			return "", fmt.Errorf("got a boolean, want a %s", flagType)
		}
		return fmt.Sprint(x), nil
	case json.Number:
		if flagType == "duration" {
			n, err := x.Int64()
			if err != nil {
				return "", fmt.Errorf("a duration as a number is nanoseconds, an integer (got %s)", x)
			}
			return time.Duration(n).String(), nil
		}
		return x.String(), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, err := configValue(e, "string")
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	default:
		return "", fmt.Errorf("unsupported value %v (want a string, number, boolean or list)", v)
	}
}
